"""Files are data, not code: what mixgym signs, and how it tells its own files from others'.

Pickle -- and SB3's cloudpickle inside its policy zips -- runs code while it loads. mixgym
therefore unpickles only what this installation wrote itself: every checkpoint and every SB3
policy it writes carries an HMAC-SHA256 of its contents under a local secret key, checked
*before* anything is unpickled. A file without a valid signature -- written on another
machine or under another key, or crafted -- is refused (checkpoints) or loaded through a path
that unpickles nothing (policies, `mixgym.agents.sb3_files`), unless the user says it is
trusted.

The key: 32 random bytes in ``$MIXGYM_KEY_FILE`` or, by default,
``$XDG_CONFIG_HOME/mixgym/signing.key`` (``~/.config/mixgym/signing.key``), created with mode
0600 on first use. A key readable or writable by others is refused (anyone who can read it can
forge signatures). Deleting the key makes every file signed with it foreign, never unsafe.

>>> signature = sign(b"payload")
>>> verify(signature, b"payload"), verify(signature, b"payload!")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

KEY_ENV = "MIXGYM_KEY_FILE"
"""Environment variable naming the key file (tests point it at a temporary one)."""
_KEY_BYTES = 32


class UntrustedFile(ValueError):
    """A file that is not signed by this installation's key, loaded without being trusted."""


def key_path() -> Path:
    """Where the signing key lives (see the module docstring)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "mixgym" / "signing.key"


def signing_key() -> bytes:
    """This installation's secret key, created (mode 0600, race-free) on first use."""
    path = key_path()
    if not path.exists():
        _create_key(path)
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"the signing key {str(path)!r} is not a regular file")
    if info.st_mode & 0o077:
        raise ValueError(
            f"the signing key {str(path)!r} is readable or writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}), so they could forge signatures: chmod 600 it"
        )
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise ValueError(f"the signing key {str(path)!r} holds {len(key)} bytes, not {_KEY_BYTES}: delete it to make a new one")
    return key


def _create_key(path: Path) -> None:
    """Write a fresh key beside `path` and link it into place; a concurrent creator's key wins
    if it was first (os.link never replaces), so every process ends up with the same key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(_KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def sign(*parts: bytes) -> str:
    """HMAC-SHA256 (hex) of `parts` under this installation's key; each part is length-prefixed,
    so ``sign(b"ab", b"c")`` and ``sign(b"a", b"bc")`` differ."""
    mac = hmac.new(signing_key(), digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "little"))
        mac.update(part)
    return mac.hexdigest()


def verify(signature: str | bytes, *parts: bytes) -> bool:
    """Whether `signature` is `sign(*parts)` (compared in constant time)."""
    if isinstance(signature, bytes):
        signature = signature.decode("ascii", "replace")
    return hmac.compare_digest(signature, sign(*parts))
