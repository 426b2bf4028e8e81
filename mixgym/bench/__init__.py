"""`mixgym bench CONFIG.yaml`: a grid of agents x rewards x backends x seeds, run in parallel.

>>> from mixgym.bench import parse_config
>>> grid = parse_config({"seeds": [0, 1], "agents": ["exp3"], "rewards": ["alignment"],
...                      "backends": {"toy": {"num_domains": 3}}})
>>> [cell.label for cell in grid.cells()][:3]  # natural and uniform run beside every agent
['exp3/alignment/toy/seed0', 'natural/alignment/toy/seed0', 'uniform/alignment/toy/seed0']
"""

from __future__ import annotations

import argparse
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mixgym.bench.cells import oracle_objective, run_cell
from mixgym.bench.config import BenchConfig, Cell, load_config, parse_config
from mixgym.bench.execute import CellOutcome, run_cells
from mixgym.bench.report import write_report


@dataclass(frozen=True)
class BenchResult:
    """The cells' outcomes, the per-group summary and its Markdown table."""

    outcomes: list[CellOutcome]
    summary: pd.DataFrame
    markdown: str

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_bench(config: BenchConfig, out: str | Path, workers: int | None = None, progress: bool = True) -> BenchResult:
    """Run every unfinished cell of `config` under `out`, then write tables and plots there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    search = {key: value for key, value in {**config.baselines, **config.agents}.get("oracle", {}).items() if key != "rewards"}
    oracles = {label: value for label, options in config.backends.items() if (value := oracle_objective(options, search)) is not None}
    outcomes = run_cells(config.cells(), out, functools.partial(run_cell, oracles=oracles), workers, progress)
    summary, text = write_report(outcomes, out)
    return BenchResult(outcomes, summary, text)


def _bench_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out = Path(args.out or Path("runs") / config.name)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.config, out / "config.yaml")
    result = run_bench(config, out, workers=args.workers, progress=not args.no_progress)
    print(result.markdown)
    for outcome in result.failed:
        print(f"FAILED {outcome.cell.label}: {outcome.error} (traceback: {outcome.directory / 'error.txt'})")
    print(f"tables and plots in {out}")
    return 1 if result.failed else 0


def add_bench_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench CONFIG`` to the `mixgym` command line."""
    p = subparsers.add_parser(
        "bench",
        help="run a grid of agents x rewards x backends x seeds from a YAML file",
        description="Run every cell of the grid in CONFIG (see benchmarks/configs/) in parallel processes. "
        "Finished cells are cached under OUT/cells/ by a hash of their configuration and are not run again; "
        "a cell that crashes is reported and the others finish. Writes results.csv, summary.csv, summary.md "
        "and PNG plots into OUT.",
    )
    p.add_argument("config", help="the grid, a YAML file")
    p.add_argument("--out", help="output folder (default: runs/<name>)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_bench_command)


__all__ = ["BenchConfig", "BenchResult", "Cell", "add_bench_cli", "load_config", "parse_config", "run_bench"]
