"""Checkpoint files that survive crashes, and the pieces of process state they must capture.

Why each piece:
- Atomic writes (temporary file in the same folder, fsync, rename, fsync of the folder): a
  crash or a kill during a write leaves the previous checkpoint intact, never half a file
  under the final name; a write that fails (disk full) removes its temporary file and raises
  `CheckpointWriteFailed`, which names the checkpoints still intact; and
  `CheckpointStore.remove_temporary` clears those a killed writer left.
- Two digests in each file's header, both checked before anything is unpickled: a SHA-256 of
  the payload (a truncated or corrupted file is skipped with a warning; the newest *valid*
  checkpoint is used) and an HMAC-SHA256 under this installation's key (`mixgym.trust`): a
  checkpoint this installation did not write -- copied from another machine, or crafted to
  run code when unpickled -- is refused (`UntrustedCheckpoint`) unless the caller trusts it.
- When checkpoints exist but none reads back, `load_latest` says so (`NoValidCheckpoint`)
  rather than letting a resume silently start over.
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

from mixgym.trust import UntrustedFile, sign, verify

_MAGIC = b"MIXGYM-CHECKPOINT-2\n"
_UNSIGNED_MAGIC = b"MIXGYM-CHECKPOINT-1\n"  # mixgym before signing: a checksum only
_NAME = re.compile(r"^checkpoint-(\d{8})\.ckpt$")
_TEMPORARY = re.compile(r"^\.checkpoint-\d{8}\.ckpt\.tmp-\d+$")


class CorruptCheckpoint(ValueError):
    """A checkpoint file whose header or checksum does not match its contents."""


class UntrustedCheckpoint(UntrustedFile):
    """An intact checkpoint that this installation did not sign."""


class CheckpointWriteFailed(OSError):
    """A checkpoint that could not be written (a full disk, a lost mount); the older ones are intact."""


class NoValidCheckpoint(ValueError):
    """A folder holds checkpoints, and none of them reads back intact."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old or the new bytes, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupted write leaves nothing behind
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(body: bytes) -> bytes:
    """`body` behind the header: its SHA-256 and this installation's signature (`unseal` checks both)."""
    return _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + sign(body).encode() + b"\n" + body


def unseal(data: bytes, source: str = "checkpoint", trusted: bool = False, kind: str = "mixgym checkpoint") -> bytes:
    """The body of `seal`'s bytes, after both checks.

    Raises:
        CorruptCheckpoint: the bytes were cut or altered (checksum mismatch, bad header).
        UntrustedCheckpoint: they are intact but not signed by this installation (another
            machine's key, an older mixgym, a crafted file) and `trusted` is False.
    """
    if data.startswith(_MAGIC):
        digest, _, rest = data[len(_MAGIC) :].partition(b"\n")
        signature, _, body = rest.partition(b"\n")
    elif data.startswith(_UNSIGNED_MAGIC):
        digest, _, body = data[len(_UNSIGNED_MAGIC) :].partition(b"\n")
        signature = b""
    else:
        raise CorruptCheckpoint(f"{source} is not a {kind} (bad header)")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"{source} is truncated or corrupt (checksum mismatch)")
    if not trusted and not verify(signature, body):
        raise UntrustedCheckpoint(
            f"{source} was not written by this installation (it is unsigned or signed with another key: "
            "copied from elsewhere, or crafted). Loading a checkpoint unpickles it, which can run code: "
            "if you trust the file, pass --trust-checkpoint (trust_checkpoint=True); otherwise delete it"
        )
    return body


def encode(payload: Any) -> bytes:
    """Header, checksum, this installation's signature and the pickled payload."""
    return seal(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def decode(data: bytes, source: str = "checkpoint", trusted: bool = False) -> Any:
    """The payload of `encode`'s bytes (`unseal`'s checks pass before anything is unpickled)."""
    return pickle.loads(unseal(data, source, trusted))


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

    def remove_temporary(self) -> list[Path]:
        """Delete the temporary files of writes that never finished (call while holding the
        run's lock: then no write is in progress); the paths removed."""
        if not self.directory.is_dir():
            return []
        stale = [p for p in self.directory.iterdir() if _TEMPORARY.match(p.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def clear(self) -> None:
        """Delete every checkpoint (a run that starts over)."""
        for path in self.paths():
            path.unlink(missing_ok=True)
        self.remove_temporary()

    def save(self, payload: Any, decision: int) -> Path:
        """Write `payload` as the checkpoint of `decision`, then drop all but the newest `keep`."""
        if decision < 0:
            raise ValueError(f"decision must be >= 0, got {decision!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"checkpoint-{decision:08d}.ckpt"
        try:
            atomic_write_bytes(path, encode(payload))
        except OSError as error:
            raise self.write_failed(error, f"checkpoint {str(path)!r}") from error
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def write_failed(self, error: OSError, what: str) -> CheckpointWriteFailed:
        """The error for a failed write of `what` (the checkpoint, or what it counts on)."""
        kept = ", ".join(p.name for p in self.paths()) or "none"
        return CheckpointWriteFailed(
            error.errno,
            f"cannot write {what} ({error.strerror or error}); the earlier checkpoints are intact ({kept}): "
            "free space and resume (--resume, resume=True)",
        )

    def load_latest(self, trusted: bool = False) -> tuple[Any, Path] | None:
        """The newest checkpoint that reads back intact; None if there is none at all.

        Corrupt ones are skipped with a warning. An intact one that this installation did not
        sign stops the search (`UntrustedCheckpoint`) unless `trusted`: falling back to an
        older one would hide the foreign file. `NoValidCheckpoint` if every one is corrupt.
        """
        problems = []
        for path in reversed(self.paths()):
            try:
                return decode(path.read_bytes(), str(path), trusted), path
            except (CorruptCheckpoint, OSError, pickle.UnpicklingError, EOFError) as error:
                warnings.warn(f"skipping checkpoint {path}: {error}", stacklevel=2)
                problems.append(f"{path.name}: {error}")
        if problems:
            raise NoValidCheckpoint(
                f"every checkpoint in {str(self.directory)!r} is unreadable ({'; '.join(problems)}): there is "
                "nothing to resume from; start over with --restart (restart=True), which discards them"
            )
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
    still be killed. Nested requests share what they catch: an inner one starts with the
    outer one's pending request (a signal that came before the inner block is not lost) and
    hands its own back on exit (the outer loop learns that the inner run was stopped).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    _active: list[StopRequest] = []

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested == signum:  # escalate to what ran before the outermost request
            outermost = StopRequest._active[0] if StopRequest._active else self
            signal.signal(signum, outermost._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.requested = signum

    def __enter__(self) -> StopRequest:
        if StopRequest._active:
            self.requested = StopRequest._active[-1].requested
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        StopRequest._active.append(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        StopRequest._active.remove(self)
        if StopRequest._active and self.requested is not None:
            outer = StopRequest._active[-1]
            outer.requested = outer.requested or self.requested


def to_bytes(save: Any) -> bytes:
    """Call `save(buffer)` (e.g. an SB3 model's `save`) on an in-memory buffer; its bytes."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()
