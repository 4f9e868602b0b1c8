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
