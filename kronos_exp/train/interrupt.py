"""SIGTERM as an orderly stop: runs end KILLED and no checkpoint is half-written.

The handler raises at once, but an exception raised while Python happens to run a finalizer
(``__del__`` of some library object) is printed and dropped, so the stop is also remembered and
the training loop raises it again at its next step. A stop landing inside a database call waits
for that call to return (``outside_database_calls``).
"""
from __future__ import annotations

import contextlib
import signal
import sys
from types import FrameType
from typing import Callable, Iterator

Handler = Callable[[int, "FrameType | None"], None]

# Modules whose frames on the stack mean a database transaction may be open (MLflow's SQLAlchemy
# stores keep a session open across their own Python code, so theirs count, their REST client not).
_DATABASE_MODULES = ("sqlalchemy", "sqlite3", "mlflow.store.db", "mlflow.store.tracking.sqlalchemy_store",
                     "mlflow.store.model_registry.sqlalchemy_store")
RETRY_S = 0.02


def _in_database_call(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_DATABASE_MODULES):
            return True
        frame = frame.f_back
    return False


def outside_database_calls(act: Handler) -> Handler:
    """A signal handler that runs ``act`` at once, or, when the signal lands inside a database call,
    as soon as that call has returned: an exception raised mid-transaction leaves the SQLite
    connection holding its lock, so the run could not be ended KILLED and every other job writing
    the store would wait 20 s and fail with "database is locked"."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if not _in_database_call(frame):
            act(signum, frame)
            return
        previous = signal.getsignal(signal.SIGALRM)

        def retry(_alarm: int, now: FrameType | None) -> None:
            if _in_database_call(now):
                signal.setitimer(signal.ITIMER_REAL, RETRY_S)
                return
            signal.signal(signal.SIGALRM, previous)
            act(signum, now)

        signal.signal(signal.SIGALRM, retry)
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)

    return handler


class Interrupted(KeyboardInterrupt):
    """A stop requested by a signal; handled like Ctrl-C."""

    signum = signal.SIGTERM


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal number, as shells report a process a signal ended: 130 for Ctrl-C (SIGINT),
    143 for SIGTERM; schedulers and scripts can tell an interrupt from a failure (exit 1)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


_requested: str | None = None
_requested_by: int = signal.SIGTERM


def stop(message: str) -> Interrupted:
    """The exception for a recorded stop, carrying the signal that asked for it."""
    err = Interrupted(message)
    err.signum = _requested_by
    return err


def raise_if_stop_requested() -> None:
    if _requested is not None:
        raise stop(_requested)


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Interrupted`` (now, and again at the next training step),
    unless it comes while an error is being handled: torchrun stops the other processes with
    SIGTERM when one fails, and that failure, not the stop, is how the runs end."""
    global _requested

    def handler(signum, frame):
        global _requested
        _requested = f"signal {signum}"
        if sys.exc_info()[0] is None:  # an error being handled (runs being ended FAILED) goes on: it is the news
            raise Interrupted(_requested)

    try:
        previous = signal.signal(signal.SIGTERM, outside_database_calls(handler))
        alarm = signal.getsignal(signal.SIGALRM)
    except ValueError:  # not the main thread (e.g. a joblib worker thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)  # a stop still waiting for a database call is moot now
        signal.signal(signal.SIGALRM, alarm)
        signal.signal(signal.SIGTERM, previous)
        _requested = None


def stop_requested() -> bool:
    return _requested is not None


@contextlib.contextmanager
def stops_at_step_boundary() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM only record the stop: the training loop acts on it at
    its next optimizer-step boundary, where it can save a consistent training state."""
    global _requested

    def handler(signum, frame):
        global _requested, _requested_by
        _requested, _requested_by = f"signal {signum}", signum

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    except Interrupted:
        _requested = None  # acted on: the loop stopped for it
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
