"""The bench grid on a Ray cluster: each cell a Ray core task (``mixgym bench --engine ray``).

The cells are the same as the process engine's and run the same function with the same
cache (``OUT/cells/<key>/``, written under ``<key>.partial/`` and renamed into place when
finished, `mixgym.bench.execute`): only where they run changes. Each
unfinished cell becomes one task of `RayOptions.cpus_per_cell` CPUs and `gpus_per_cell` GPUs
(fractions share a GPU; Ray sets ``CUDA_VISIBLE_DEVICES`` for the task, so the HF backend's
``device="auto"`` finds its GPU); Ray places the tasks on the cluster's nodes. The output
folder must be on a filesystem every node sees (NFS, Lustre), as each task writes its cell's
folder; a cell whose task fails or whose node dies is reported as failed, the others finish,
and rerunning the command runs only what is missing. Ray core only -- not Tune, and not the
``rllib`` extra, which pins an old gymnasium.

Needs ``pip install "mixgym[cluster]"`` (ray), imported only here.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mixgym.bench.config import Cell
from mixgym.bench.execute import CellOutcome, CellRunner, cell_dir, finished, partial_dir, run_one_cell


@dataclass(frozen=True)
class RayOptions:
    """Where and with what the cells run on Ray.

    Attributes:
        address: the cluster to join (``"auto"``: the one this machine belongs to; a
            ``ray://host:10001`` address); None starts a local Ray for the grid (no dashboard).
        cpus_per_cell: CPUs Ray reserves for each cell's task.
        gpus_per_cell: GPUs Ray reserves for each cell's task (a fraction shares one).
    """

    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0

    def __post_init__(self) -> None:
        if not self.cpus_per_cell > 0:
            raise ValueError(f"cpus_per_cell must be > 0, got {self.cpus_per_cell!r}")
        if not self.gpus_per_cell >= 0:
            raise ValueError(f"gpus_per_cell must be >= 0, got {self.gpus_per_cell!r}")


def import_ray() -> Any:
    """ray, or gymnasium's `DependencyNotInstalled` naming the extra."""
    try:
        import ray
    except ImportError as error:
        from gymnasium.error import DependencyNotInstalled

        raise DependencyNotInstalled('ray is not installed; the ray engine needs pip install "mixgym[cluster]"') from error
    return ray


def _cell_task(cell: Cell, out: str, runner: CellRunner) -> CellOutcome:
    """One cell in a Ray worker, one torch thread as in the process engine's workers."""
    import torch

    torch.set_num_threads(1)
    return run_one_cell(cell, Path(out), runner)


def run_cells_on_ray(cells: list[Cell], out: Path, runner: CellRunner, options: RayOptions, progress: bool = True) -> list[CellOutcome]:
    """Run every cell not already finished under `out` as Ray tasks (module docstring)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    if started_here:
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
    try:
        outcomes = [CellOutcome(c, "cached", cell_dir(out, c)) for c in cells if finished(out, c)]
        pending = [c for c in cells if not finished(out, c)]
        task = ray.remote(num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell, max_retries=0)(_cell_task)
        running = {task.remote(cell, str(out), runner): cell for cell in pending}
        bar = tqdm(total=len(cells), initial=len(outcomes), desc="cells (ray)", unit="cell", disable=not progress)
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(done)
            try:
                outcomes.append(ray.get(done))
            except ray.exceptions.RayError as error:  # the task's process or node died
                partial_dir(out, cell).mkdir(parents=True, exist_ok=True)
                (partial_dir(out, cell) / "error.txt").write_text(f"the Ray task of cell {cell.label} failed:\n{error}\n")
                outcomes.append(CellOutcome(cell, "failed", partial_dir(out, cell), f"{type(error).__name__}: {error}"))
            bar.update()
        bar.close()
        return outcomes
    finally:
        if started_here:
            ray.shutdown()
            for number, handler in handlers.items():  # ray.init replaces them and leaves them
                signal.signal(number, handler)
