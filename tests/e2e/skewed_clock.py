"""A process whose wall clock is off, as on a host whose clock drifted (no root, no libfaketime):
``python skewed_clock.py <seconds> <kronos_exp arguments>`` runs ``python -m kronos_exp`` with
``time.time``/``time.time_ns`` (MLflow's run times, our heartbeats) that many seconds ahead
(negative: behind), and so is the ``datetime.now`` Optuna's database storage stamps trials with.
``datetime.datetime`` itself is not replaced process-wide: pandas' compiled parsers loop on a
subclass. ``time.monotonic`` is untouched, as on a real host: skew is a wall-clock matter."""
from __future__ import annotations

import datetime
import runpy
import sys
import time
from pathlib import Path


def skewed_command(seconds: float, *arguments: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), str(seconds), *arguments]


def _skew(seconds: float) -> None:
    real_time, real_time_ns, shift = time.time, time.time_ns, datetime.timedelta(seconds=seconds)
    time.time = lambda: real_time() + seconds
    time.time_ns = lambda: real_time_ns() + int(seconds * 1e9)

    class Skewed(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.now(tz) + shift

    import optuna.storages._rdb.storage as rdb

    rdb.datetime = Skewed


if __name__ == "__main__":
    _skew(float(sys.argv.pop(1)))
    sys.argv[0] = "kronos_exp"
    runpy.run_module("kronos_exp", run_name="__main__", alter_sys=True)
