"""Search processes judged without comparing another host's clock with ours (issue 27, item 6):
a worker on another host whose clock is ten minutes off keeps its trials while its heartbeat
moves; one that stops beating, before or during our search, has its running trial failed after
four beats of watching; a worker of this host whose process is gone is dead at once; a trial
nobody owns is judged by watching, not by its start time. Real Optuna studies in a SQLite file;
another host's worker is played by a thread writing its registration."""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from kronos_exp.search.workers import TRIAL_WORKER_ATTR, WORKER_PREFIX, Worker

BEAT = 0.5  # every worker's hydra.sweeper.heartbeat_s


URL = "sqlite:///optuna.db"  # in the test's own folder


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return optuna.create_study(storage=URL, study_name="s")


def _register(study, wid: str, skew_s: float, host: str = "another-host", pid: int = 4242, index: int = 0) -> None:
    """The registration a worker with a clock ``skew_s`` off ours writes at each beat."""
    study.set_user_attr(WORKER_PREFIX + wid, {"host": host, "pid": pid, "started": time.time() + skew_s - 5,
                                              "beat": time.time() + skew_s, "every": BEAT, "index": index,
                                              "ended": False, "inherited": 0})


@contextlib.contextmanager
def _beating(study, wid: str, skew_s: float, **where):
    done = threading.Event()

    def beat():
        while not done.wait(BEAT):
            _register(study, wid, skew_s, **where)
    _register(study, wid, skew_s, **where)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        done.set()
        thread.join()


def _owned(study, wid: str, states: list[TrialState]) -> list[int]:
    numbers = []
    for state in states:
        trial = study.ask()
        trial.set_user_attr(TRIAL_WORKER_ATTR, wid)
        if state == TrialState.COMPLETE:
            study.tell(trial, 1.0)
        numbers.append(trial.number)
    return numbers


def _state(study, number: int) -> TrialState:
    return study.get_trials(deepcopy=False)[number].state


def _wait_for(predicate, seconds: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, "never happened"
        time.sleep(BEAT / 4)
    return time.monotonic() - started


@pytest.mark.parametrize("skew_s", [600.0, -600.0])
def test_a_beating_worker_of_another_host_with_a_skewed_clock_keeps_its_trials(study, skew_s):
    with _beating(study, "far", skew_s):
        running, _ = _owned(study, "far", [TrialState.RUNNING, TrialState.COMPLETE])
        me = Worker.join(study, BEAT, URL)
        time.sleep(10 * BEAT)  # our heartbeat thread watches it all along
        assert (_state(study, running), me.inherited) == (TrialState.RUNNING, 0)
        me.leave()


@pytest.mark.parametrize("skew_s", [600.0, -600.0, 0.0])
def test_a_silent_worker_of_another_host_is_dead_after_four_beats_of_watching(study, skew_s):
    _register(study, "lost", skew_s)
    running, _ = _owned(study, "lost", [TrialState.RUNNING, TrialState.COMPLETE])
    started = time.monotonic()
    me = Worker.join(study, BEAT, URL)
    assert 4 * BEAT <= time.monotonic() - started < 4 * BEAT + 5
    assert (_state(study, running), me.inherited) == (TrialState.FAIL, 1)  # and its finished trial is inherited
    me.leave()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_worker_of_this_host_whose_process_is_gone_is_dead_at_once(study):
    _register(study, "gone", 0.0, host=socket.gethostname(), pid=_dead_pid())
    [running] = _owned(study, "gone", [TrialState.RUNNING])
    Worker.join(study, BEAT, URL).leave()
    assert _state(study, running) == TrialState.FAIL  # at the join: a worker of this host is never watched there


def test_a_worker_that_stops_beating_during_our_search_has_its_running_trial_failed(study):
    with _beating(study, "later-lost", 600.0) as stop:
        [running] = _owned(study, "later-lost", [TrialState.RUNNING])
        me = Worker.join(study, BEAT, URL)
        assert _state(study, running) == TrialState.RUNNING  # alive when we joined
        stop.set()  # its host is lost
    waited = _wait_for(lambda: _state(study, running) == TrialState.FAIL, 12 * BEAT)
    assert waited >= 3 * BEAT and me.inherited == 0  # inheriting is a rerun's business, at its join
    me.leave()


def _unowned_trial(study, age_s: float) -> None:
    """A trial asked by a process killed before it could name itself its worker, stamped by a
    clock ``age_s`` behind ours."""
    start = datetime.datetime.now() - datetime.timedelta(seconds=age_s)
    study.add_trial(FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=start,
                                datetime_complete=None, params={"x": 0.5},
                                distributions={"x": FloatDistribution(0, 1)}, user_attrs={}, system_attrs={},
                                intermediate_values={}, trial_id=0))


@pytest.mark.parametrize("age_s", [0.0, 600.0])
def test_a_trial_nobody_owns_is_failed_after_four_beats_of_watching_not_by_its_start_time(study, age_s):
    """Another host's live process may have asked for it a moment ago: it is watched, whatever its
    start time says."""
    _unowned_trial(study, age_s)
    with _beating(study, "other", 0.0):
        me = Worker.join(study, BEAT, URL)
        assert _state(study, 0) == TrialState.RUNNING  # at first sight
        waited = _wait_for(lambda: _state(study, 0) == TrialState.FAIL, 12 * BEAT)
        assert waited >= 3 * BEAT
        me.leave()


def test_a_trial_nobody_owns_while_every_other_process_is_dead_is_failed_at_join(study):
    """No live process could own it: the one killed between asking and naming itself did (a rerun
    right after a kill left it RUNNING to its end)."""
    _unowned_trial(study, 0.0)
    _register(study, "killed", 0.0, host=socket.gethostname(), pid=_dead_pid())
    me = Worker.join(study, BEAT, URL)
    assert _state(study, 0) == TrialState.FAIL
    me.leave()


def test_a_worker_whose_clock_is_behind_takes_a_seed_offset_nobody_holds(study):
    """By start times it joined first (index 0: the first worker's seed); the first holds that one."""
    _register(study, "first", 600.0, host=socket.gethostname(), pid=os.getpid(), index=0)
    me = Worker.join(study, BEAT, URL)
    assert me.index == 1
    me.leave()


def test_a_lost_worker_once_inherited_holds_up_no_later_join(study):
    _register(study, "lost", 0.0)
    _owned(study, "lost", [TrialState.COMPLETE])
    first = Worker.join(study, BEAT, URL)  # watched it four beats, inherited it
    assert first.inherited == 1
    first.leave()
    started = time.monotonic()
    assert Worker.join(study, BEAT, URL).inherited == 1  # the first, ended: its inheritance passes on
    assert time.monotonic() - started < 4 * BEAT
