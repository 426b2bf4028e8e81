"""Run a grid's cells in worker processes: cached, written atomically, surviving dead workers and Ctrl-C.

Folders. A cell runs in ``OUT/cells/<key>.partial/`` (key: `Cell.key`, a hash of its whole
configuration): its checkpoints, ``decisions.csv`` and, if it fails, ``error.txt``. Once it has
finished, its ``summary.json`` is written and the folder is renamed ``OUT/cells/<key>/``. A
folder under its final name is therefore a finished cell, never half of one; it is not run
again, so a rerun of the same command does only what is missing, and a cell that was stopped
or killed resumes from its checkpoints.

Processes. Each cell runs in a process of its own, `workers` at a time, one thread each
(`mixgym.resources.pin_worker_threads`, as on Ray).
A cell that raises is reported "failed" with its traceback in ``error.txt``; the others go on.
A process that dies without a word -- the out-of-memory killer, a SIGKILL -- is seen by its exit
status: its cell is started once more (resuming its checkpoints) and, if that process dies too,
reported "failed" with an ``error.txt`` that says how it died. No other cell is disturbed.

Stopping. On SIGINT (Ctrl-C) or SIGTERM no new cell starts; the running ones are sent SIGTERM,
checkpoint and exit ("stopped"); the cells not started are "skipped". `run_cells` returns when
the running ones have exited, so the caller can report what finished.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mixgym.bench.config import Cell
from mixgym.checkpoint import StopRequest, atomic_write_bytes, fsync_directory
from mixgym.resources import pin_worker_threads

CellRunner = Callable[[Cell, Path], dict]
ATTEMPTS = 2
"""Processes a cell may lose (killed, out of memory) before it is reported failed."""
_FAILED, _STOPPED = 3, 4  # exit statuses of a cell's process (0: done)
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell.

    Attributes:
        cell: the cell.
        status: "done", "cached" (finished before), "failed", "stopped" (interrupted; its
            checkpoints wait in its partial folder) or "skipped" (not started: the grid stopped).
        directory: its final folder (done, cached) or its partial folder (the others).
        error: for a failed cell, the error's last line.
    """

    cell: Cell
    status: str
    directory: Path
    error: str = ""


def cell_dir(out: Path, cell: Cell) -> Path:
    """A finished cell's folder."""
    return out / "cells" / cell.key


def partial_dir(out: Path, cell: Cell) -> Path:
    """Where a cell runs until it has finished."""
    return out / "cells" / f"{cell.key}.partial"


def finished(out: Path, cell: Cell) -> bool:
    return (cell_dir(out, cell) / "summary.json").exists()


def run_one_cell(cell: Cell, out: Path, runner: CellRunner) -> CellOutcome:
    """Run `cell` in this process: in its partial folder, renamed to its final name once finished."""
    from mixgym.experiment import RunStopped

    partial, final = partial_dir(out, cell), cell_dir(out, cell)
    try:
        partial.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(partial / "cell.json", json.dumps(asdict(cell), indent=2, default=str).encode())
        (partial / "error.txt").unlink(missing_ok=True)
        summary = runner(cell, partial)
        atomic_write_bytes(partial / "summary.json", json.dumps(summary, indent=2, default=float).encode())
    except RunStopped:
        return CellOutcome(cell, "stopped", partial)
    except Exception as error:  # a crashing cell (or a full disk) is reported; the others finish
        write_note(partial / "error.txt", traceback.format_exc())
        return CellOutcome(cell, "failed", partial, f"{type(error).__name__}: {error}")
    if final.exists():  # a folder of an unfinished cell from an older mixgym
        shutil.rmtree(final)
    os.replace(partial, final)
    fsync_directory(final.parent)
    return CellOutcome(cell, "done", final)


def _cell_process(cell: Cell, out: Path, runner: CellRunner) -> None:
    """A worker process: one torch thread, signals turned into a clean stop, the outcome as exit status."""
    with StopRequest():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked by the parent around the fork
        pin_worker_threads()  # as every engine's workers: the numbers must not depend on where a cell ran
        outcome = run_one_cell(cell, out, runner)
    raise SystemExit({"done": 0, "failed": _FAILED, "stopped": _STOPPED}[outcome.status])


def _start(context: multiprocessing.context.BaseContext, cell: Cell, out: Path, runner: CellRunner) -> multiprocessing.Process:
    """Start a cell's process with SIGINT/SIGTERM blocked until it can handle them: a stop that
    comes while it starts is delivered, not lost."""
    process = context.Process(target=_cell_process, args=(cell, out, runner), name=f"mixgym-cell-{cell.key}")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return process


def write_note(path: Path, text: str) -> bool:
    """Write a cell's ``error.txt`` if the disk lets us (a full disk must not take the grid down
    with the cell); whether it was written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        return False
    return True


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by signal {-exitcode} ({signal.Signals(-exitcode).name})"
    return f"exited with status {exitcode}"


def run_cells(cells: list[Cell], out: Path, runner: CellRunner, workers: int | None = None, progress: bool = True) -> list[CellOutcome]:
    """Run every cell not already finished under `out`, `workers` processes at a time (default:
    all cores); see the module docstring. The outcomes, in the order the cells finished."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    outcomes = [CellOutcome(c, "cached", cell_dir(out, c)) for c in cells if finished(out, c)]
    queue = deque(c for c in cells if not finished(out, c))
    attempts: Counter[str] = Counter()
    running: dict[int, tuple[multiprocessing.Process, Cell]] = {}
    context = multiprocessing.get_context()
    bar = tqdm(total=len(cells), initial=len(outcomes), desc="cells", unit="cell", disable=not progress)
    told = False
    with StopRequest() as stop:
        while queue or running:
            while queue and len(running) < workers and stop.requested is None:
                cell = queue.popleft()
                attempts[cell.key] += 1
                process = _start(context, cell, out, runner)
                running[process.sentinel] = (process, cell)
            if stop.requested is not None and not told:
                for process, _ in running.values():
                    process.terminate()  # SIGTERM (the terminal's Ctrl-C may have reached them too): checkpoint and stop
                told = True
            if stop.requested is not None and queue:
                outcomes += [CellOutcome(c, "skipped", partial_dir(out, c)) for c in queue]
                queue.clear()
            for sentinel in multiprocessing.connection.wait(list(running), timeout=0.1):
                process, cell = running.pop(sentinel)  # type: ignore[arg-type]
                process.join()
                outcome = _outcome(process.exitcode, cell, out, attempts[cell.key], stop.requested is not None)
                if outcome is None:
                    bar.write(f"cell {cell.label}: its process {_death(process.exitcode)}; starting it once more")
                    queue.appendleft(cell)
                    continue
                outcomes.append(outcome)
                bar.update()
    bar.close()
    return outcomes


def _outcome(exitcode: int | None, cell: Cell, out: Path, attempt: int, stopping: bool) -> CellOutcome | None:
    """A finished process' cell outcome, or None to run the cell again."""
    partial = partial_dir(out, cell)
    if exitcode == 0:
        return CellOutcome(cell, "done", cell_dir(out, cell))
    if exitcode == _FAILED:
        try:
            lines = (partial / "error.txt").read_text().strip().splitlines()
        except OSError:  # it could not be written (a full disk)
            lines = ["failed; its error.txt could not be written (is the disk full?)"]
        return CellOutcome(cell, "failed", partial, lines[-1] if lines else "failed")
    if exitcode == _STOPPED or stopping:
        return CellOutcome(cell, "stopped", partial)
    if attempt < ATTEMPTS:
        return None
    how = _death(exitcode)
    write_note(
        partial / "error.txt",
        f"The process running cell {cell.label} {how}, in each of {attempt} attempts, without reporting an error.\n"
        "A process killed by SIGKILL was most likely killed by the out-of-memory killer (see `dmesg`); the cell's\n"
        "checkpoints, if any, are in this folder, and the next run of the grid resumes from them.\n"
    )
    return CellOutcome(cell, "failed", partial, f"its process {how} ({attempt} attempts)")
