"""A cross-process lock per fingerprint, so parallel sweep jobs train a shared phase once.

``filelock`` takes an OS lock on the file (``flock`` on POSIX, ``msvcrt`` on Windows): the OS
drops it when the holder exits, crashed or not, so a dead job never blocks the others.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


@contextlib.contextmanager
def fingerprint_lock(directory: Path, fingerprint: str, what: str, poll_s: float = 0.5) -> Iterator[None]:
    """Hold ``<directory>/<fingerprint>.lock``; while another process holds it, wait and say so."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / f"{fingerprint}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another job is producing fingerprint %s; waiting for it", what, fingerprint[:12])
        lock.acquire(poll_interval=poll_s)
    try:
        yield
    finally:
        lock.release()
