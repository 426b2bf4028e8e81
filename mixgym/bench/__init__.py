"""`mixgym bench CONFIG.yaml`: a grid of agents x rewards x backends x seeds, run in parallel.

Engines: ``process`` (local processes, `mixgym.bench.execute`) and ``ray`` (Ray core tasks on a
cluster, `mixgym.bench.ray_engine`). ``--shard I/N`` runs every N-th cell from the I-th (no
daemon: one Slurm array task per shard); shards share the cell cache, so a final run without
``--shard`` finds every cell done and writes the whole grid's tables.

>>> from mixgym.bench import parse_config
>>> grid = parse_config({"seeds": [0, 1], "agents": ["exp3"], "rewards": ["alignment"],
...                      "backends": {"toy": {"num_domains": 3}}})
>>> [cell.label for cell in grid.cells()][:3]  # natural and uniform run beside every agent
['exp3/alignment/toy/seed0', 'natural/alignment/toy/seed0', 'uniform/alignment/toy/seed0']
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mixgym.bench.cells import oracle_objective, run_cell
from mixgym.bench.config import BenchConfig, Cell, load_config, parse_config, validate
from mixgym.bench.execute import ATTEMPTS, CellOutcome, run_cells
from mixgym.bench.report import write_report
from mixgym.checkpoint import atomic_write_bytes
from mixgym.paths import output_folder
from mixgym.resources import pin_worker_threads
from mixgym.runlock import RunLock

ENGINES = ("process", "ray")


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N): the I-th of N shards, 0 <= I < N."""
    index, sep, count = str(text).partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4 .. 3/4), got {text!r}")
    return shard


def run_bench(
    config: BenchConfig,
    out: str | Path,
    workers: int | None = None,
    progress: bool = True,
    engine: str = "process",
    ray: Any = None,
    shard: tuple[int, int] | None = None,
) -> BenchResult:
    """Run every unfinished cell of `config` (of its `shard`: every N-th from the I-th) under
    `out` with `engine` ("process" with `workers`, or "ray" with `ray`, a
    `mixgym.bench.ray_engine.RayOptions`), then write tables and plots there (a shard's in
    ``out/shards/I-of-N``).

    One bench writes a report folder at a time (`mixgym.runlock.RunLock` on `out`, or on the
    shard's folder: shards of one grid share `out`'s cell cache and run side by side, each cell
    under its own lock). Everything is checked before the first cell starts (`validate`); the
    configuration that ran is written to ``out/config.yaml`` (as JSON, which YAML reads). A
    stopped grid (SIGINT/SIGTERM) still writes the report of the cells that finished;
    ``result.stopped`` says so. This process runs with the workers' thread settings
    (`mixgym.resources.pin_worker_threads`; it searches the oracle mixtures), so the numbers do
    not depend on the engine, the shard or the shell that started it.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "ray":
        from mixgym.bench.ray_engine import import_ray

        import_ray()  # before any work: a missing extra is the first thing said
    out = output_folder(out, "bench output folder")
    report = out
    if shard is not None:
        index, count = parse_shard(f"{shard[0]}/{shard[1]}")
        report = output_folder(out / "shards" / f"{index}-of-{count}", "shard's report folder")
    with RunLock(report):
        validate(config, progress=progress)
        pin_worker_threads()
        cells = config.cells()
        if shard is not None:
            cells = cells[index::count]
        atomic_write_bytes(out / "config.yaml", json.dumps(_as_raw(config), indent=1).encode())
        search = {key: value for key, value in {**config.baselines, **config.agents}.get("oracle", {}).items() if key != "rewards"}
        oracles = {
            label: value for label, options in config.backends.items() if (value := oracle_objective(options, search)) is not None
        }
        runner = functools.partial(run_cell, oracles=oracles)
        if engine == "ray":
            from mixgym.bench.ray_engine import RayOptions, run_cells_on_ray

            outcomes = run_cells_on_ray(cells, out, runner, ray or RayOptions(), progress)
        else:
            outcomes = run_cells(cells, out, runner, workers, progress)
        summary, text = write_report(outcomes, report)
    return BenchResult(outcomes, summary, text)


def _as_raw(config: BenchConfig) -> dict:
    """The configuration in the YAML form `parse_config` reads."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _bench_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    shard = parse_shard(args.shard) if args.shard is not None else None
    out = Path(args.out or Path("runs") / config.name)
    ray = None
    if args.engine == "ray":
        from mixgym.bench.ray_engine import RayOptions, import_ray

        import_ray()
        ray = RayOptions(
            address=args.ray_address, cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell, attempts=args.attempts or ATTEMPTS
        )
    elif (args.ray_address, args.cpus_per_cell, args.gpus_per_cell, args.attempts) != (None, 1.0, 0.0, None):
        raise ValueError("--ray-address, --cpus-per-cell, --gpus-per-cell and --attempts apply to --engine ray")
    result = run_bench(config, out, workers=args.workers, progress=not args.no_progress, engine=args.engine, ray=ray, shard=shard)
    report = out / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else out
    _track(args, result.outcomes)
    print(result.markdown)
    for outcome in result.failed:
        print(f"FAILED {outcome.cell.label}: {outcome.error} (details: {outcome.directory / 'error.txt'})")
    if result.stopped:
        stopped = sum(o.status == "stopped" for o in result.outcomes)
        skipped = sum(o.status == "skipped" for o in result.outcomes)
        print(
            f"stopped: {stopped} running cell(s) checkpointed, {skipped} not started; the report above covers the "
            f"finished ones. Run the same command again to continue. Tables and plots in {report}"
        )
        return 130
    print(f"tables and plots in {report}")
    return 1 if result.failed else 0


def _track(args: argparse.Namespace, outcomes: list[CellOutcome]) -> None:
    """``--tensorboard``/``--wandb``: each finished cell's per-decision table, one run per seed."""
    if args.tensorboard is None and args.wandb is None:
        return
    from mixgym.cli import _track as track

    for outcome in outcomes:
        table = outcome.directory / "decisions.csv"
        if outcome.status in ("done", "cached") and table.is_file():
            cell = outcome.cell
            label = cell.label.rsplit("/seed", 1)[0]
            track(args, pd.read_csv(table), label, json.loads((outcome.directory / "cell.json").read_text()))


def add_bench_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench CONFIG`` to the `mixgym` command line."""
    from mixgym.cli import add_tracking_arguments, int_at_least

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
    p.add_argument(
        "--engine", choices=ENGINES, default="process",
        help="process: local processes (default); ray: one Ray core task per cell (pip install \"mixgym[cluster]\"; "
        "OUT must be on a filesystem every node sees)",
    )
    p.add_argument("--ray-address", default=None, help="ray: the cluster to join (auto, ray://HOST:10001); default a local Ray")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="ray: CPUs per cell (default 1)")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="ray: GPUs per cell, a fraction shares one (default 0)")
    p.add_argument(
        "--attempts", type=int_at_least(1), default=None,
        help=f"ray: Ray tasks a cell may lose to a dead worker or node before it is reported failed (default {ATTEMPTS})",
    )
    p.add_argument(
        "--shard", default=None, metavar="I/N",
        help="run only every N-th cell from the I-th (0 <= I < N), e.g. one Slurm array task each; tables in OUT/shards/I-of-N; "
        "a last run without --shard writes the whole grid's tables from the cache",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tracking_arguments(p)
    p.set_defaults(func=_bench_command)


__all__ = ["ENGINES", "BenchConfig", "BenchResult", "Cell", "add_bench_cli", "load_config", "parse_config", "parse_shard", "run_bench"]
