"""A job names on its trial the model version it ended with (issue 28, item 3); the trial may have
been ended meanwhile by another search process (it took this sweep for dead): then nothing is
written and one warning says so, as for the job run's link. Real Optuna studies in a SQLite file."""
from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from kronos_exp.search.trial import MODEL_VERSION_ATTR, TrialLink


def test_a_running_trial_gets_the_version_and_an_ended_one_a_warning(tmp_path, caplog):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    study.ask(), study.ask()
    TrialLink("s", 0, storage).name_version("models:/kronos-predictor/3")
    study.tell(1, state=TrialState.FAIL)  # another process ended trial 1
    with caplog.at_level(logging.WARNING):
        TrialLink("s", 1, storage).name_version("models:/kronos-predictor/4")
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.user_attrs.get(MODEL_VERSION_ATTR) for t in trials] == ["models:/kronos-predictor/3", None]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("trial 1 of study 's' was ended FAIL by another search process"), warning
