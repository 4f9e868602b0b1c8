"""What a rerun does with the trials a search left (issue 29, item 4): a trial interrupted by a
kill or a stop is queued again with its own params, once, ahead of new samples (its job then
resumes its phases from their training states: tests/e2e/test_optuna.py); a trial that failed of
itself is not; and a trial is never pruned after its last epoch, so that it keeps the metrics its
job measures after training. Real Optuna studies in a SQLite file."""
from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.kronos_optuna_sweeper.sweeper import _failed
from kronos_exp.search.trial import PRUNER_ATTR, TrialLink
from kronos_exp.search.workers import RETRY_ATTR, TRIAL_WORKER_ATTR, Worker
from kronos_exp.train.distributed import World

URL = "sqlite:///optuna.db"
SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return optuna.create_study(storage=URL, study_name="s")


def _search_killed_during_its_second_trial(study) -> Worker:
    first = Worker.join(study, 10, URL)
    for _ in range(2):
        trial = study.ask(SPACE)
        trial.set_user_attr(TRIAL_WORKER_ATTR, first.id)
    study.tell(0, 1.0)
    first._stop.set()  # killed: its registration says it ended, as a stopped search's does
    first._thread.join()
    first.beat(ended=True)
    return first


def test_an_interrupted_trial_is_run_again_with_its_params_first_and_once(study):
    _search_killed_during_its_second_trial(study)
    rerun = Worker.join(study, 10, URL)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    again = study.ask(SPACE)
    assert again.params == study.trials[1].params and again.user_attrs[RETRY_ATTR] == 1
    assert study.ask(SPACE).params != again.params  # then sampling goes on
    rerun.leave()
    assert not [t for t in study.trials if t.state == TrialState.WAITING]
    Worker.join(study, 10, URL).leave()  # a later rerun queues nothing again
    assert sum(t.user_attrs.get(RETRY_ATTR) == 1 for t in study.trials) == 1


def test_a_trial_that_failed_of_itself_is_not_run_again(study):
    first = Worker.join(study, 10, URL)
    trial = study.ask(SPACE)
    trial.set_user_attr(TRIAL_WORKER_ATTR, first.id)
    _failed(study, trial, "its job returned nan (stopped by the error it printed)")
    first.leave()
    Worker.join(study, 10, URL).leave()
    assert [t.state for t in study.trials] == [TrialState.FAIL]


@pytest.mark.parametrize("last, pruned", [(False, True), (True, False)])
def test_a_trial_is_never_pruned_after_its_last_epoch(study, last, pruned):
    """A diverged loss prunes at once, except after the last epoch (the phase's last, or the one
    early stopping ends it after): the job then measures what it trained and the trial ends with
    those values."""
    trial = study.ask(SPACE)
    trial.set_user_attr(PRUNER_ATTR, ["median", 0, 0])
    hook = TrialLink("s", 0, URL).epoch_hook(World(), "predictor")
    stopped = None
    try:
        hook("predictor", 0, math.nan, last)
    except Exception as err:  # noqa: BLE001 - what the hook raises is the verdict
        stopped = err
    assert (stopped is not None) == pruned
    assert study.trials[0].state == (TrialState.PRUNED if pruned else TrialState.RUNNING)
