"""Whether a heartbeat still moves, judged on the observer's own monotonic clock.

A heartbeat records its writer's wall clock; hosts' clocks differ (a host a minute ahead read
another's fresh beat as a minute old, took its live claim and trained the phase twice), so no
observer compares a beat with its own ``time.time()``. It compares a beat with the beat it saw
before: a holder is dead once its beat has not changed for ``stale_after`` of its intervals,
measured by ``time.monotonic()`` from the moment this observer first saw that value. The price:
a holder seen for the first time is given the benefit of the doubt, so taking over a dead one
needs that long of watching, as a waiter does anyway. Used by claims (tracking/claims.py) and by
the search processes of a shared study (search/workers.py).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Hashable

from .stale import process_alive

ALIVE = "alive"  # its beat changed while we watched, within the limit
UNSURE = "unsure"  # not seen to change yet, and not watched long enough to call it dead
DEAD = "dead"  # unchanged for the whole limit of our watching


def gone_here(host: object, pid: object) -> bool:
    """Whether a holder's process ran on this host and is gone: dead at once, no clock needed."""
    return host == socket.gethostname() and str(pid).isdigit() and not process_alive(int(str(pid)))


class BeatWatch:
    """What this observer saw of each holder's heartbeat: the value, since when, and whether it ever changed."""

    def __init__(self, stale_after: int, clock: Callable[[], float] = time.monotonic):
        self.stale_after, self.clock = stale_after, clock
        self._seen: dict[Hashable, tuple[object, float, bool]] = {}
        self._lock = threading.Lock()

    def verdict(self, key: Hashable, beat: object, interval_s: float) -> str:
        """ALIVE, UNSURE or DEAD for holder ``key`` whose heartbeat now reads ``beat`` (any value
        that changes with each beat), written every ``interval_s`` seconds."""
        with self._lock:
            now = self.clock()
            seen = self._seen.get(key)
            if seen is None or seen[0] != beat:
                self._seen[key] = (beat, now, seen is not None)
                return UNSURE if seen is None else ALIVE
            _, since, moved = seen
            if now - since >= self.stale_after * interval_s:
                return DEAD
            return ALIVE if moved else UNSURE
