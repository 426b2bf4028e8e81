"""Checkpoint files that survive crashes, and the pieces of process state they must capture.

Why each piece:
- Atomic writes (temporary file in the same folder, fsync, rename, fsync of the folder): a
  crash or a kill during a write leaves the previous checkpoint intact, never half a file
  under the final name.
- A SHA-256 of the payload in each file's header: a truncated or corrupted file is detected
  on load and skipped with a warning; the newest *valid* checkpoint is used.
- Retention of the last `keep` checkpoints: one bad file never loses the run.
- RNG capture (Python's `random`, numpy's global generator, torch's CPU generator):
  stable-baselines3 draws replay-buffer indices and exploration noise from the global
  generators, so a bit-identical resume must restore them.
- `StopRequest`: SIGINT and SIGTERM set a flag instead of killing the process mid-decision;
  the training loop checks it at the next decision boundary, writes a checkpoint and stops.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import signal
import sys
import warnings
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import numpy as np

_MAGIC = b"MIXGYM-CHECKPOINT-1\n"
_NAME = re.compile(r"^checkpoint-(\d{8})\.ckpt$")


class CorruptCheckpoint(ValueError):
    """A checkpoint file whose header or checksum does not match its contents."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old or the new bytes, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def encode(payload: Any) -> bytes:
    """Header, checksum and pickled payload."""
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes, source: str = "checkpoint") -> Any:
    """The payload of `encode`'s bytes; `CorruptCheckpoint` if they were altered or cut."""
    if not data.startswith(_MAGIC):
        raise CorruptCheckpoint(f"{source} is not a mixgym checkpoint (bad header)")
    digest, _, body = data[len(_MAGIC) :].partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"{source} is truncated or corrupt (checksum mismatch)")
    return pickle.loads(body)


class CheckpointStore:
    """A folder of numbered checkpoints (`checkpoint-00000120.ckpt`), the last `keep` kept.

    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
    >>> for decision in (10, 20, 30):
    ...     _ = store.save({"decision": decision}, decision)
    >>> [p.name for p in store.paths()]
    ['checkpoint-00000020.ckpt', 'checkpoint-00000030.ckpt']
    >>> store.load_latest()[0]
    {'decision': 30}
    """

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, payload: Any, decision: int) -> Path:
        """Write `payload` as the checkpoint of `decision`, then drop all but the newest `keep`."""
        if decision < 0:
            raise ValueError(f"decision must be >= 0, got {decision!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"checkpoint-{decision:08d}.ckpt"
        atomic_write_bytes(path, encode(payload))
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[Any, Path] | None:
        """The newest checkpoint that reads back intact; corrupt ones are skipped with a warning."""
        for path in reversed(self.paths()):
            try:
                return decode(path.read_bytes(), str(path)), path
            except (CorruptCheckpoint, OSError, pickle.UnpicklingError, EOFError) as error:
                warnings.warn(f"skipping checkpoint {path}: {error}", stacklevel=2)
        return None


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states that libraries draw from (torch's only if torch is loaded)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state()}
    if "torch" in sys.modules:
        import torch

        state["torch"] = torch.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what `capture_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])


class StopRequest:
    """Within its `with` block, SIGINT/SIGTERM set `requested` instead of stopping the process.

    A second signal of the same kind while a stop is pending restores the default handler's
    behaviour (KeyboardInterrupt for SIGINT, termination for SIGTERM), so a hung run can
    still be killed.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested == signum:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.requested = signum

    def __enter__(self) -> "StopRequest":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def to_bytes(save: Any) -> bytes:
    """Call `save(buffer)` (e.g. an SB3 model's `save`) on an in-memory buffer; its bytes."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()
