"""What a sweep leaves behind: no environment that nests later runs under it, and a sweep that ran
no job ends FAILED. Plus which errors print without a traceback."""
from __future__ import annotations

import os

import mlflow
import pytest
from omegaconf import OmegaConf

from kronos_exp.tracking import PARENT_RUN_ENV, Tracker
from kronos_exp.hydra_callbacks import MlflowSweepCallback
from kronos_exp.tracking.sweep import SWEEP_ID_ENV


@pytest.fixture
def uri(tmp_path, monkeypatch):
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    monkeypatch.delenv(SWEEP_ID_ENV, raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _config(uri):
    return OmegaConf.create({"mlflow": {"tracking_uri": uri, "experiment_name": "kronos_exp"},
                             "hydra": {"overrides": {"task": []}}, "objective": None, "phases": {"tokenizer": {}}})


def test_a_sweep_that_ran_no_job_ends_failed_and_clears_its_environment(uri):
    callback = MlflowSweepCallback()
    callback.on_multirun_start(_config(uri))
    sweep = callback.sweep
    assert os.environ[PARENT_RUN_ENV] == sweep.run_id and SWEEP_ID_ENV in os.environ
    with pytest.raises(SystemExit, match="ended without running a job"):
        callback.on_multirun_end(_config(uri))
    assert sweep.tracker.client.get_run(sweep.run_id).info.status == "FAILED"
    assert PARENT_RUN_ENV not in os.environ and SWEEP_ID_ENV not in os.environ


def test_a_stale_sweep_id_in_the_environment_is_ignored(uri, tmp_path, monkeypatch):
    tracker = Tracker(uri, "kronos_exp")
    stale = tracker.client.create_run(tracker.experiment_id, tags={"kind": "sweep"})
    tracker.client.set_terminated(stale.info.run_id, "FINISHED")
    monkeypatch.setenv(PARENT_RUN_ENV, stale.info.run_id)
    with tracker.job_run({"seed": 1}, tmp_path) as run:
        run_id = run.info.run_id
    assert "mlflow.parentRunId" not in tracker.client.get_run(run_id).data.tags
    # A running sweep is still a parent.
    live = tracker.client.create_run(tracker.experiment_id, tags={"kind": "sweep"})
    monkeypatch.setenv(PARENT_RUN_ENV, live.info.run_id)
    with tracker.job_run({"seed": 1}, tmp_path) as run:
        run_id = run.info.run_id
    assert tracker.client.get_run(run_id).data.tags["mlflow.parentRunId"] == live.info.run_id
    mlflow.set_tracking_uri("")


def test_only_our_own_errors_print_without_a_traceback():
    from kronos_exp.data import DataError
    from kronos_exp.errors import ConfigError, UserError

    assert isinstance(ConfigError("x"), UserError) and isinstance(DataError("x"), UserError)
    assert not isinstance(ValueError("from inside numpy"), UserError)
