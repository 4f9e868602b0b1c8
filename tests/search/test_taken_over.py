"""A trial another search process ended FAIL while its job ran (it judged our heartbeat stalled):
the job stops at its next epoch as a clean stop (TrialPruned, with the reason),
and the sweep tells nothing and says so in one warning line, then goes on to its next trial
(issue 27, item 6). Real Optuna studies in a SQLite file; the sweeper's own ``_tell``."""
from __future__ import annotations

import logging
import re

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from hydra_plugins.kronos_optuna_sweeper.sweeper import KronosOptunaSweeper
from kronos_exp.errors import TrialPruned, TrialTaken
from kronos_exp.search.trial import PRUNER_ATTR, TrialLink
from kronos_exp.train.distributed import World

TAKEN = "trial 0 of study 's' was ended FAIL by another search process (its heartbeat looked stalled)"


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _taken_trial(storage: str, pruner: str = "median"):
    """Trial 0 of study ``s``, asked by this sweep, then ended FAIL by another process."""
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.set_user_attr(PRUNER_ATTR, [pruner, 0, 0])
    optuna.load_study(study_name="s", storage=storage).tell(0, state=TrialState.FAIL)  # the other process
    return study, trial


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _job(value) -> JobReturn:
    ret = JobReturn(status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret


@pytest.mark.parametrize("value", [0.5, None, float("nan")])
def test_the_sweep_tells_nothing_of_a_taken_trial_and_says_so_once(storage, caplog, value):
    study, trial = _taken_trial(storage)
    with caplog.at_level(logging.WARNING):
        KronosOptunaSweeper._tell(study, trial, _job(value))
    assert _warnings(caplog) == [f"{TAKEN}; its result is not recorded"]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL] and study.trials[0].values is None


def test_the_job_of_a_taken_trial_stops_at_its_next_report(storage):
    _taken_trial(storage)
    stop = TrialLink("s", 0, storage).report(1.0, epoch=0)
    assert isinstance(stop, TrialTaken) and str(stop).startswith(TAKEN)


def test_the_job_of_a_taken_trial_stops_at_its_next_epoch_when_epochs_are_not_reported(storage):
    _taken_trial(storage, pruner="none")
    hook = TrialLink("s", 0, storage).epoch_hook(World(), "tokenizer")
    with pytest.raises(TrialTaken, match=re.escape(TAKEN)):
        hook("tokenizer", 0, 1.0, False)


def test_a_job_whose_trial_was_taken_before_it_linked_stops_at_its_first_epoch(storage, caplog):
    """Linking is rank 0's alone: it says so and goes on; the first epoch's verdict stops every rank."""
    _taken_trial(storage)
    link = TrialLink("s", 0, storage)
    with caplog.at_level(logging.WARNING):
        link.link("some-run-id")
    [warning] = _warnings(caplog)
    assert warning.startswith(TAKEN)
    with pytest.raises(TrialPruned, match=re.escape(TAKEN)):
        link.epoch_hook(World(), "tokenizer")("tokenizer", 0, 1.0, False)
