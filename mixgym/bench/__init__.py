"""`mixgym bench CONFIG.yaml`: a grid of agents x rewards x backends x seeds, run in parallel.

>>> from mixgym.bench import parse_config
>>> grid = parse_config({"seeds": [0, 1], "agents": ["exp3"], "rewards": ["alignment"],
...                      "backends": {"toy": {"num_domains": 3}}})
>>> [cell.label for cell in grid.cells()]
['exp3/alignment/toy/seed0', 'uniform/alignment/toy/seed0', 'exp3/alignment/toy/seed1', 'uniform/alignment/toy/seed1']
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mixgym.bench.cells import oracle_objective, run_cell
from mixgym.bench.config import BenchConfig, Cell, load_config, parse_config, validate
from mixgym.bench.execute import CellOutcome, run_cells
from mixgym.bench.report import write_report
from mixgym.checkpoint import atomic_write_bytes
from mixgym.paths import output_folder
from mixgym.runlock import RunLock


@dataclass(frozen=True)
class BenchResult:
    """The cells' outcomes, the per-group summary and its Markdown table."""

    outcomes: list[CellOutcome]
    summary: pd.DataFrame
    markdown: str

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def stopped(self) -> bool:
        """Whether a signal stopped the grid before every cell ran (the report is partial)."""
        return any(o.status in ("stopped", "skipped") for o in self.outcomes)


def run_bench(config: BenchConfig, out: str | Path, workers: int | None = None, progress: bool = True) -> BenchResult:
    """Run every unfinished cell of `config` under `out`, then write tables and plots there.

    One bench writes to `out` at a time (`mixgym.runlock.RunLock`). Everything is checked
    before the first cell starts (`validate`); the configuration that ran is written to
    ``out/config.yaml`` (as JSON, which YAML reads). A stopped grid (SIGINT/SIGTERM) still
    writes the report of the cells that finished; ``result.stopped`` says so.
    """
    out = output_folder(out, "bench output folder")
    with RunLock(out):
        validate(config)
        cells = config.cells()
        atomic_write_bytes(out / "config.yaml", json.dumps(_as_raw(config), indent=1).encode())
        oracles = {label: value for label, options in config.backends.items() if (value := oracle_objective(options)) is not None}
        outcomes = run_cells(cells, out, functools.partial(run_cell, oracles=oracles), workers, progress)
        summary, text = write_report(outcomes, out)
    return BenchResult(outcomes, summary, text)


def _as_raw(config: BenchConfig) -> dict:
    """The configuration in the YAML form `parse_config` reads."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _bench_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out = Path(args.out or Path("runs") / config.name)
    result = run_bench(config, out, workers=args.workers, progress=not args.no_progress)
    print(result.markdown)
    for outcome in result.failed:
        print(f"FAILED {outcome.cell.label}: {outcome.error} (details: {outcome.directory / 'error.txt'})")
    if result.stopped:
        stopped = sum(o.status == "stopped" for o in result.outcomes)
        skipped = sum(o.status == "skipped" for o in result.outcomes)
        print(
            f"stopped: {stopped} running cell(s) checkpointed, {skipped} not started; the report above covers the "
            f"finished ones. Run the same command again to continue. Tables and plots in {out}"
        )
        return 130
    print(f"tables and plots in {out}")
    return 1 if result.failed else 0


def add_bench_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench CONFIG`` to the `mixgym` command line."""
    from mixgym.cli import int_at_least

    p = subparsers.add_parser(
        "bench",
        help="run a grid of agents x rewards x backends x seeds from a YAML file",
        description="Run every cell of the grid in CONFIG (see benchmarks/configs/) in parallel processes. "
        "The whole config is checked before anything runs. Finished cells are cached under OUT/cells/ by a hash "
        "of their configuration and of the files they read, and are not run again; a cell that crashes is "
        "reported and the others finish; a cell whose process dies (out of memory) is tried once more. Ctrl-C "
        "checkpoints the running cells, starts no new ones and writes the report of the finished ones; the same "
        "command continues. Writes results.csv, summary.csv, summary.md and PNG plots into OUT.",
    )
    p.add_argument("config", help="the grid, a YAML file")
    p.add_argument("--out", help="output folder (default: runs/<name>)")
    p.add_argument("--workers", type=int_at_least(1), default=None, help="parallel processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_bench_command)


__all__ = ["BenchConfig", "BenchResult", "Cell", "add_bench_cli", "load_config", "parse_config", "run_bench"]
