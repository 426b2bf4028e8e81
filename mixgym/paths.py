"""Output paths checked before any work starts, so a run never ends by failing to save itself.

`output_folder` and `output_file` create what is missing and prove they can write there (a
probe file is created and removed), or raise `ValueError` naming the path, what it was for and
what is wrong: it is a file where a folder is wanted (or the reverse), a parent is a file, the
file system refuses the write (permissions, read-only), ...
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def _probe(folder: Path, what: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mixgym-write-test-"):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into the {what} {str(folder)!r}: {error.strerror or error}") from None


def output_folder(path: str | Path, what: str) -> Path:
    """`path` as a folder that exists and is writable (created if missing).

    Args:
        path: the folder.
        what: what it is for, for the error (e.g. "--results folder").
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the {what} {str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the {what} {str(folder)!r}: {error.strerror or error}") from None
    _probe(folder, what)
    return folder


def output_file(path: str | Path, what: str) -> Path:
    """`path` as a file that can be written: its folder exists and is writable, and it is
    either absent or a regular, writable file (which will be replaced)."""
    file = Path(path).expanduser()
    if file.exists():
        mode = file.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"the {what} {str(file)!r} is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise ValueError(f"the {what} {str(file)!r} exists and is not a regular file")
        if not os.access(file, os.W_OK):
            raise ValueError(f"cannot write the {what} {str(file)!r}: permission denied")
    output_folder(file.parent, f"folder of the {what}")
    return file
