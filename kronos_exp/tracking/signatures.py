"""What this user's own runs wrote, told apart from what anyone who can write to the tracking
server claims they wrote.

A tag on a shared server is anyone's word: a run planted with a victim's fingerprint can point
a resume at the planter's files and record their sha256. So a phase run signs what it leaves to
be resumed (its training states and best checkpoints) with a key only this user can read,
``$XDG_CONFIG_HOME/kronos_exp/resume.key`` (``~/.config`` by default): 32 random bytes, made
on first use, a regular file of this user's with no access for group or others, in a folder
only this user can write. A resume accepts only what carries that signature. Every host that
shares the home folder (a cluster's login and compute nodes) shares the key, so SLURM requeues
and takeovers across nodes resume; a host with another home holds another key and trains afresh.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

KEY_BYTES = 32


class KeyUnusable(Exception):
    """The key file exists but others could read or replace it: signatures made with it prove nothing."""


def key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "kronos_exp" / "resume.key"


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise KeyUnusable(f"{folder} is a link, not yours, or writable by others")


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise KeyUnusable(f"{path} is not a regular file of yours readable by you alone (chmod 600 it)")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise KeyUnusable(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key; delete it to make a new one")
    return key


def user_key() -> bytes:
    """This user's key, made on first use; ``KeyUnusable`` when the file or its folder is not private.
    Two processes making it at once agree: the file is created whole or not at all (O_EXCL)."""
    path = key_path()
    _private_folder(path.parent)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made it first: then theirs is the key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path)


def sign(*fields: str) -> str:
    """The HMAC-SHA256 of ``fields`` under this user's key (hex)."""
    message = "\0".join(fields).encode()
    return hmac.new(user_key(), message, hashlib.sha256).hexdigest()


def signed_by_me(recorded: list[str] | tuple[str, ...], *fields: str) -> bool:
    """Whether one of the ``recorded`` signatures is this user's over ``fields``."""
    expected = sign(*fields)
    return any(hmac.compare_digest(expected, mac) for mac in recorded)
