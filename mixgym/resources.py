"""Memory checks before allocation: a configuration too large for the machine is refused up front
with its estimate, instead of being killed by the out-of-memory killer (or swapping) minutes later.

`available_memory` is what the kernel says can still be allocated without swapping
(``MemAvailable``), capped by the cgroup's limit when the process runs in a container with one.
"""

from __future__ import annotations

from pathlib import Path


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
