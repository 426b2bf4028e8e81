"""Run a grid's cells in parallel processes, caching finished cells and surviving crashed ones.

Each cell writes into ``OUT/cells/<key>/`` (key = hash of the cell's full configuration):
``decisions.csv`` (one row per decision) and, last, ``summary.json``. A cell whose
``summary.json`` exists is finished and is not run again, so a rerun of the same command
only does what is missing. A cell that raises writes ``error.txt`` (the traceback) instead;
the other cells go on, and the cell is tried again on the next run.
"""

from __future__ import annotations

import json
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from mixgym.bench.config import Cell

CellRunner = Callable[[Cell, Path], dict]


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell: "done", "cached" or "failed" (with the error's last line)."""

    cell: Cell
    status: str
    directory: Path
    error: str = ""


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.key


def _one_thread_per_worker() -> None:
    """Cells run side by side: each takes one torch thread (several oversubscribe the cores,
    and a torch step then runs tens of times slower, not faster)."""
    import torch

    torch.set_num_threads(1)


def run_one_cell(cell: Cell, directory: Path, runner: CellRunner) -> CellOutcome:
    """Run `cell` in `directory`: its summary.json, or its error.txt and a failed outcome."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cell.json").write_text(json.dumps(asdict(cell), indent=2, default=str))
    (directory / "error.txt").unlink(missing_ok=True)
    try:
        summary = runner(cell, directory)
    except Exception as error:  # a crashing cell is reported; the others finish
        (directory / "error.txt").write_text(traceback.format_exc())
        return CellOutcome(cell, "failed", directory, f"{type(error).__name__}: {error}")
    tmp = directory / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    tmp.replace(directory / "summary.json")
    return CellOutcome(cell, "done", directory)


def run_cells(cells: list[Cell], out: Path, runner: CellRunner, workers: int | None = None, progress: bool = True) -> list[CellOutcome]:
    """Run every cell not already finished under `out`, `workers` at a time (default: all cores)."""
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    outcomes = [CellOutcome(c, "cached", cell_dir(out, c)) for c in cells if (cell_dir(out, c) / "summary.json").exists()]
    pending = [c for c in cells if not (cell_dir(out, c) / "summary.json").exists()]
    bar = tqdm(total=len(cells), initial=len(outcomes), desc="cells", unit="cell", disable=not progress)
    if workers == 1:
        for cell in pending:
            outcomes.append(run_one_cell(cell, cell_dir(out, cell), runner))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread_per_worker) as pool:
            futures = {pool.submit(run_one_cell, cell, cell_dir(out, cell), runner): cell for cell in pending}
            for future in as_completed(futures):
                try:
                    outcomes.append(future.result())
                except Exception as error:  # the worker process itself died (killed, out of memory)
                    cell = futures[future]
                    outcomes.append(CellOutcome(cell, "failed", cell_dir(out, cell), f"{type(error).__name__}: {error}"))
                bar.update()
    bar.close()
    return outcomes
