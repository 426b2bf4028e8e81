"""One writer per run folder: an advisory lock that a second writer runs into, not through.

Two processes appending to one ``decisions.csv`` and pruning one ``checkpoints/`` interleave
rows and delete each other's files. `RunLock` holds an exclusive ``flock`` on
``<folder>/.mixgym.lock`` for as long as a run writes there; the file says who holds it (PID,
host, start time, command) so that the second writer's error can name the first.

The kernel drops a ``flock`` when its holder dies, however it dies (SIGKILL, out of memory),
so a lock file left by a dead process is simply taken over, with a warning naming the
process that left it. Where the file system refuses ``flock``, the holder's PID decides: a
lock of a PID that no longer runs on this host is recovered; one from another host is
respected.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with RunLock(folder):
...     RunLock(folder).acquire()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mixgym.runlock.FolderInUse: ... is in use by another mixgym process (PID ...
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK_NAME = ".mixgym.lock"


class FolderInUse(ValueError):
    """The run folder is locked by another live process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, since {started}: {holder.get('command', '?')}"


class RunLock:
    """An exclusive advisory lock on a run folder (see the module docstring); a context manager.

    Args:
        directory: the run folder (created if missing).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise `FolderInUse` naming its holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                held = self._flock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not held:
                holder = self._read(fd)
                os.close(fd)
                raise FolderInUse(
                    f"{str(self.directory)!r} is in use by another mixgym process ({_describe(holder)}); "
                    "wait for it to finish or stop it, or use another folder"
                )
            try:  # the holder before us may have removed the file between our open and our lock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous:
            warnings.warn(f"recovered the lock of {str(self.directory)!r} left by a process that is gone ({_describe(previous)})", stacklevel=2)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _flock(self, fd: int) -> bool:
        """True if the exclusive lock was taken, False if another process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        holder = self._read(fd)  # no flock here: judge by the holder's PID
        if not holder:
            return True
        if holder.get("host") != socket.gethostname():
            return False
        return not _alive(int(holder.get("pid", 0))) or int(holder.get("pid", 0)) == os.getpid()

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "command": "unreadable lock file"}
        return data if isinstance(data, dict) else {}

    def release(self) -> None:
        """Drop the lock and remove the lock file."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
