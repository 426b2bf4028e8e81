"""Memory checks before allocation: a configuration too large for the machine is refused up front
with its estimate, instead of being killed by the out-of-memory killer (or swapping) minutes later.

`available_memory` is what the kernel says can still be allocated without swapping
(``MemAvailable``), capped by the cgroup's limit when the process runs in a container with one.

`pin_worker_threads`: the one thread setting every bench worker runs with, so that a grid's
numbers are the same to the last bit whichever engine ran it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes that can be allocated now, or None where the system does not say (not Linux)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        return None
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if available is not None and limit is not None and used is not None:
        available = min(available, max(limit - used, 0))
    return available


def gib(size: float) -> str:
    """Bytes as GiB with one decimal (or MiB below one GiB)."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def check_memory(needed: int, what: str, advice: str) -> None:
    """`ValueError` if `needed` bytes exceed the memory available, naming `what` and the estimate."""
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{what} needs about {gib(needed)} of memory, more than the {gib(available)} available: {advice}")


WORKER_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The thread settings of every bench worker, whatever the engine (process pool, Ray, shards):
the nets are tiny and cells run side by side, and -- the reason it must be the same everywhere --
a BLAS or torch reduction split over another number of threads sums in another order, so a
cell's numbers would depend on where it ran."""


def _openblas() -> Any:
    """The OpenBLAS library numpy loaded (ctypes), or None (another BLAS, or not Linux)."""
    import ctypes

    import numpy  # noqa: F401  (loads its BLAS)

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for path in {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}:
        library = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(library, name):
                getter = name.replace("set_num_threads", "get_num_threads")
                return getattr(library, name), getattr(library, getter, None)
    return None


def pin_worker_threads() -> None:
    """Give this process `WORKER_THREADS`: the environment (for what it starts or imports
    later), torch's intra-op pool and the BLAS numpy already loaded."""
    import os

    os.environ.update(WORKER_THREADS)
    import torch

    torch.set_num_threads(1)
    blas = _openblas()
    if blas is not None:
        blas[0](1)


def worker_threads() -> dict[str, Any]:
    """This process' thread settings (to check that workers agree)."""
    import os

    import torch

    blas = _openblas()
    return {
        "torch": torch.get_num_threads(),
        "blas": None if blas is None or blas[1] is None else int(blas[1]()),
        **{name: os.environ.get(name) for name in WORKER_THREADS},
    }
