"""A cross-process lock per fingerprint, so parallel sweep jobs train a shared phase once.

``fcntl.flock`` locks belong to the open file: the kernel drops them when the holder exits,
crashed or not, so a dead job never blocks the others.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def fingerprint_lock(directory: Path, fingerprint: str, what: str, poll_s: float = 0.5) -> Iterator[None]:
    """Hold ``<directory>/<fingerprint>.lock``; while another process holds it, wait and say so."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{fingerprint}.lock", "a+") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("%s: another job is producing fingerprint %s; waiting for it", what, fingerprint[:12])
                    waited = True
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
