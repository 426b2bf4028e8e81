"""The bench grid on a Ray cluster: each cell a Ray core task (``mixgym bench --engine ray``).

The cells are the same as the process engine's and run the same function with the same
cache (``OUT/cells/<key>/``, written under ``<key>.partial/`` and renamed into place when
finished, `mixgym.bench.execute`) and the same thread settings
(`mixgym.resources.WORKER_THREADS`, set in each task's runtime environment before its worker
imports numpy): only where they run changes, never the numbers. Each unfinished cell becomes
one task of `RayOptions.cpus_per_cell` CPUs and `gpus_per_cell` GPUs (fractions share a GPU;
Ray sets ``CUDA_VISIBLE_DEVICES`` for the task, so the HF backend's ``device="auto"`` finds its
GPU); Ray places the tasks on the cluster's nodes. The output folder must be on a filesystem
every node sees (NFS, Lustre), as each task writes its cell's folder.

Faults. No more tasks are submitted than the cluster can run at once, so a queued cell is one
that has not started. A task whose worker process or node dies (SIGKILL, the out-of-memory
killer, a lost machine) costs only that cell's progress since its last checkpoint: it is
submitted again, resuming its checkpoints, up to `RayOptions.attempts` times in all, each loss
printed with its cause; after the last it is "failed" with the causes in its ``error.txt``. A
cell whose own code raises is "failed" at once, as with the process engine. If Ray itself is
gone (the local raylet or the head node died), the grid stops: the cells that were running are
"stopped" (their checkpoints wait in their partial folders), the others "skipped" -- never
"failed" -- and the report says to rerun the command, which runs only what is missing. Ray core
only -- not Tune, and not the ``rllib`` extra, which pins an old gymnasium.

Needs ``pip install "mixgym[cluster]"`` (ray), imported only here.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mixgym.bench.config import Cell
from mixgym.bench.execute import ATTEMPTS, CellOutcome, CellRunner, cell_dir, finished, partial_dir, run_one_cell, write_note
from mixgym.resources import WORKER_THREADS, pin_worker_threads
from mixgym.validation import integer, number


@dataclass(frozen=True)
class RayOptions:
    """Where and with what the cells run on Ray.

    Attributes:
        address: the cluster to join (``"auto"``: the one this machine belongs to; a
            ``ray://host:10001`` address); None starts a local Ray for the grid (no dashboard).
        cpus_per_cell: CPUs Ray reserves for each cell's task.
        gpus_per_cell: GPUs Ray reserves for each cell's task (a fraction shares one).
        attempts: tasks a cell may lose to a dead worker or node before it is reported failed
            (the process engine's `ATTEMPTS` by default).
    """

    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    attempts: int = ATTEMPTS

    def __post_init__(self) -> None:
        number("cpus_per_cell", self.cpus_per_cell, above=0.0)
        number("gpus_per_cell", self.gpus_per_cell, minimum=0.0)
        integer("attempts", self.attempts, 1)


def import_ray() -> Any:
    """ray, or gymnasium's `DependencyNotInstalled` naming the extra."""
    try:
        import ray
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('ray is not installed; the ray engine needs pip install "mixgym[cluster]"') from error
    return ray


def _cell_task(cell: Cell, out: str, runner: CellRunner) -> CellOutcome:
    """One cell in a Ray worker, with the thread settings of the process engine's workers."""
    pin_worker_threads()
    return run_one_cell(cell, Path(out), runner)


def _capacity(ray: Any, options: RayOptions) -> int:
    """Tasks the cluster can run at once now (at least one)."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1.0) / options.cpus_per_cell
    if options.gpus_per_cell > 0:
        slots = min(slots, resources.get("GPU", 0.0) / options.gpus_per_cell)
    return max(1, int(slots + 1e-9))


def _ray_gone(ray: Any, error: Exception) -> bool:
    """Whether `error` means that this driver can run no more tasks: its own raylet died, or no
    node of the cluster is alive."""
    if isinstance(error, ray.exceptions.LocalRayletDiedError):
        return True
    try:
        return not any(node.get("Alive") for node in ray.nodes())
    except Exception:  # any failure to reach the cluster means it is gone
        return True


def run_cells_on_ray(cells: list[Cell], out: Path, runner: CellRunner, options: RayOptions, progress: bool = True) -> list[CellOutcome]:
    """Run every cell not already finished under `out` as Ray tasks (module docstring)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    if started_here:
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
    try:
        outcomes = [CellOutcome(c, "cached", cell_dir(out, c)) for c in cells if finished(out, c)]
        queue = deque(c for c in cells if not finished(out, c))
        task = ray.remote(
            num_cpus=options.cpus_per_cell,
            num_gpus=options.gpus_per_cell,
            max_retries=0,  # retried here, where the attempts are counted and reported
            runtime_env={"env_vars": dict(WORKER_THREADS)},
        )(_cell_task)
        losses: dict[str, list[str]] = {}
        running: dict[Any, Cell] = {}
        bar = tqdm(total=len(cells), initial=len(outcomes), desc="cells (ray)", unit="cell", disable=not progress)
        while queue or running:
            while queue and len(running) < _capacity(ray, options):
                cell = queue.popleft()
                running[task.remote(cell, str(out), runner)] = cell
            (done,), _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(done)
            try:
                outcomes.append(ray.get(done))
            except ray.exceptions.RayTaskError as error:  # the cell's code raised outside run_one_cell's guard
                outcomes.append(_failed(out, cell, f"the Ray task of cell {cell.label} raised:\n{error}\n", f"{type(error).__name__}: {error}"))
            except ray.exceptions.RayError as error:  # its worker process or node died
                cause = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                losses.setdefault(cell.key, []).append(cause)
                if _ray_gone(ray, error):
                    bar.write(f"Ray is gone ({cause}): stopping the grid; rerun the command to resume it")
                    outcomes.append(CellOutcome(cell, "stopped", partial_dir(out, cell), cause))
                    outcomes += [CellOutcome(c, "stopped", partial_dir(out, c), cause) for c in running.values()]
                    outcomes += [CellOutcome(c, "skipped", partial_dir(out, c)) for c in queue]
                    running.clear()
                    queue.clear()
                    break
                if len(losses[cell.key]) < options.attempts:
                    bar.write(f"cell {cell.label}: its Ray task was lost ({cause}); starting it once more")
                    queue.appendleft(cell)
                    continue
                causes = "\n".join(f"  attempt {i + 1}: {c}" for i, c in enumerate(losses[cell.key]))
                outcomes.append(
                    _failed(
                        out,
                        cell,
                        f"The Ray task of cell {cell.label} was lost in each of {len(losses[cell.key])} attempts:\n{causes}\n"
                        "Its checkpoints, if any, are in this folder, and the next run of the grid resumes from them.\n",
                        f"its Ray task was lost ({len(losses[cell.key])} attempts; last: {cause})",
                    )
                )
            bar.update()
        bar.close()
        return outcomes
    finally:
        if started_here:
            ray.shutdown()
            for number, handler in handlers.items():  # ray.init replaces them and leaves them
                signal.signal(number, handler)


def _failed(out: Path, cell: Cell, report: str, error: str) -> CellOutcome:
    write_note(partial_dir(out, cell) / "error.txt", report)
    return CellOutcome(cell, "failed", partial_dir(out, cell), error)
