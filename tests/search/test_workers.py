"""Who searches a shared study (kronos_exp.search.workers): a rerun inherits the finished trials of
search processes that ended; processes alive together each run their own n_trials; a trial left
running by a dead process ends FAIL. Real Optuna studies in a SQLite file."""
from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from kronos_exp.search.workers import TRIAL_WORKER_ATTR, Worker


URL = "sqlite:///optuna.db"  # in the test's own folder


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return optuna.create_study(storage=URL, study_name="s")


def _trials(study, worker: Worker, states: list[TrialState]) -> None:
    for state in states:
        trial = study.ask()
        trial.set_user_attr(TRIAL_WORKER_ATTR, worker.id)
        if state == TrialState.COMPLETE:
            study.tell(trial, 1.0)
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)


def test_a_rerun_inherits_an_ended_search_and_its_inheritance_once(study):
    first = Worker.join(study, 10, URL)
    _trials(study, first, [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
    first.leave()
    second = Worker.join(study, 10, URL)
    assert second.inherited == 2  # complete and pruned count, a failed trial does not
    _trials(study, second, [TrialState.COMPLETE])
    second.leave()
    third = Worker.join(study, 10, URL)
    assert third.inherited == 3  # the second's own trial and what it had inherited
    assert Worker.join(study, 10, URL).inherited == 0  # the third is alive: concurrent, not a rerun


def test_processes_alive_together_inherit_nothing_from_each_other(study):
    one = Worker.join(study, 10, URL)
    _trials(study, one, [TrialState.COMPLETE])
    other = Worker.join(study, 10, URL)
    assert (other.inherited, other.index) == (0, 1)  # and another sampler seed


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def test_a_trial_left_running_by_a_dead_search_ends_failed(study):
    gone = Worker.join(study, 10, URL)
    _trials(study, gone, [TrialState.RUNNING])
    gone._stop.set()  # its process, on this host, is killed (another host's: tests/search/test_workers_skew.py)
    study.set_user_attr(f"kronos_worker:{gone.id}", {**gone.record(), "pid": _dead_pid()})
    Worker.join(study, 10, URL)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]


def _registrations(study) -> list[str]:
    return sorted(k for k in study.user_attrs if k.startswith("kronos_"))


def test_reruns_leave_one_registration_however_often_a_search_is_rerun(study):
    """Each rerun folds the ended search's registration into its own: the study does not grow
    one attribute per process (nor one per inheritance), and the counts carry on."""
    for rerun in range(6):
        worker = Worker.join(study, 10, URL)
        assert worker.inherited == rerun
        assert _registrations(study) == [f"kronos_worker:{worker.id}"]
        _trials(study, worker, [TrialState.COMPLETE])
        worker.leave()
    assert _registrations(study) == [f"kronos_worker:{worker.id}"]  # ended, for the next rerun to inherit


def test_of_two_processes_joining_at_once_one_inherits_an_ended_search(study):
    ended = Worker.join(study, 10, URL)
    _trials(study, ended, [TrialState.COMPLETE, TrialState.COMPLETE])
    ended.leave()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        joined = list(pool.map(lambda _: Worker.join(optuna.load_study(study_name="s", storage=URL), 10, URL),
                               range(2)))
    assert sorted(w.inherited for w in joined) == [0, 2]
    assert len(_registrations(study)) == 2  # the two live ones
    for worker in joined:
        worker.leave()


def test_a_stalled_process_taken_for_dead_stops_and_registers_nothing_again(study):
    """Another process found its process gone (here: its registration names a dead pid) and
    inherited it; at its next beat the stalled one learns it, and its leaving writes nothing."""
    stalled = Worker.join(study, 10, URL)  # no beat of its thread comes before the one below
    study.set_user_attr(f"kronos_worker:{stalled.id}", {**stalled.record(), "pid": _dead_pid()})
    heir = Worker.join(study, 10, URL)
    assert not stalled.taken_over
    stalled.beat()  # its next beat
    assert stalled.taken_over
    stalled.leave()
    assert _registrations(study) == [f"kronos_worker:{heir.id}"]
    heir.leave()


def test_claims_left_by_an_earlier_version_are_removed_and_not_counted_twice(study):
    """Before registrations were bounded, an inheritor wrote kronos_inherit:<worker>:<itself> and
    both registrations stayed; the inherited one's trials are in its inheritor's count."""
    old, heir = "host-1-aaaaaa", "host-2-bbbbbb"
    for wid, inherited in ((old, 0), (heir, 1)):
        study.set_user_attr(f"kronos_worker:{wid}", {"host": "host", "pid": 1, "started": 0.0, "beat": 0.0,
                                                    "every": 10, "index": 0, "ended": True,
                                                    "inherited": inherited})
        trial = study.ask()
        trial.set_user_attr(TRIAL_WORKER_ATTR, wid)
        study.tell(trial, 1.0)
    study.set_user_attr(f"kronos_inherit:{old}:{heir}", 0.0)
    worker = Worker.join(study, 10, URL)
    assert worker.inherited == 2  # the heir's trial and the one it had inherited, not the old one again
    assert _registrations(study) == [f"kronos_worker:{worker.id}"]
    worker.leave()
