"""Who searches a shared study (kronos_exp.search.workers): a rerun inherits the finished trials of
search processes that ended; processes alive together each run their own n_trials; a trial left
running by a dead process ends FAIL. Real Optuna studies in a SQLite file."""
from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from kronos_exp.search.workers import TRIAL_WORKER_ATTR, Worker


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")


def _trials(study, worker: Worker, states: list[TrialState]) -> None:
    for state in states:
        trial = study.ask()
        trial.set_user_attr(TRIAL_WORKER_ATTR, worker.id)
        if state == TrialState.COMPLETE:
            study.tell(trial, 1.0)
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)


def test_a_rerun_inherits_an_ended_search_and_its_inheritance_once(study):
    first = Worker.join(study, heartbeat_s=10)
    _trials(study, first, [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
    first.leave()
    second = Worker.join(study, heartbeat_s=10)
    assert second.inherited == 2  # complete and pruned count, a failed trial does not
    _trials(study, second, [TrialState.COMPLETE])
    second.leave()
    third = Worker.join(study, heartbeat_s=10)
    assert third.inherited == 3  # the second's own trial and what it had inherited
    assert Worker.join(study, heartbeat_s=10).inherited == 0  # the third is alive: concurrent, not a rerun


def test_processes_alive_together_inherit_nothing_from_each_other(study):
    one = Worker.join(study, heartbeat_s=10)
    _trials(study, one, [TrialState.COMPLETE])
    other = Worker.join(study, heartbeat_s=10)
    assert (other.inherited, other.index) == (0, 1)  # and another sampler seed


def test_a_trial_left_running_by_a_dead_search_ends_failed(study):
    gone = Worker.join(study, heartbeat_s=10)
    _trials(study, gone, [TrialState.RUNNING])
    gone._stop.set()  # its process, on this host, is killed (another host's: tests/search/test_workers_skew.py)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study.set_user_attr(f"kronos_worker:{gone.id}", {**gone.record(), "pid": dead.pid})
    Worker.join(study, heartbeat_s=10)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
