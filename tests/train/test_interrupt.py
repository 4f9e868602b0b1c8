"""SIGTERM stops training even when its exception is dropped by a finalizer."""
import os
import signal
import sys
import time

import pytest

from kronos_exp.train.interrupt import Interrupted, raise_if_stop_requested, sigterm_stops


class SignalledDuringFinalizer:
    """Delivers SIGTERM while Python runs __del__, where a raised exception is printed and dropped."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the Python-level handler runs here, inside __del__


def test_sigterm_raises_at_once():
    with sigterm_stops():
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)


def test_a_stop_dropped_by_a_finalizer_is_raised_at_the_next_check(monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    with sigterm_stops():
        SignalledDuringFinalizer()  # collected at once; the handler's exception is dropped
        assert [type(d.exc_value) for d in dropped] == [Interrupted]
        with pytest.raises(Interrupted, match="signal 15"):
            raise_if_stop_requested()
    raise_if_stop_requested()  # leaving the block forgets the request


def test_previous_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_stops():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_landing_inside_a_store_write_waits_for_it_so_the_store_stays_writable(tmp_path):
    """A stop raised mid-transaction leaves the SQLite connection holding its lock: the run can then
    not be ended KILLED, and every other job writing the store waits 20 s and fails."""
    from mlflow import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x"))

    def signal_mid_write(conn):
        signal.raise_signal(signal.SIGTERM)  # its handler runs inside SQLAlchemy, before the commit

    event.listen(Engine, "commit", signal_mid_write)
    try:
        with sigterm_stops(), pytest.raises(Interrupted):
            client.set_tag(run.info.run_id, "written", "yes")
            time.sleep(1)
    finally:
        event.remove(Engine, "commit", signal_mid_write)
    start = time.monotonic()
    client.set_terminated(run.info.run_id, "KILLED")
    assert time.monotonic() - start < 5
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["written"] == "yes"
