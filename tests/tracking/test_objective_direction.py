"""Which way a sweep's objective improves: one rule (metric_names.maximised), read by Optuna's
``hydra.sweeper.direction`` and by the sweep's job table (issue 17, defect 7)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.objective import objective_direction
from kronos_exp.errors import ConfigError
from kronos_exp.hydra_job import sweep_directions
from kronos_exp.metric_names import maximised
from kronos_exp.schemas import MlflowConfig
from kronos_exp.tracking import PARENT_RUN_ENV
from kronos_exp.tracking.sweep import SWEEP_ID_ENV, SweepRun


@pytest.mark.parametrize("name, better_higher", [
    ("tokenizer_val_loss", False), ("predictor_val_loss", False), ("eval_val_close_mae", False),
    ("eval_val_crps", False), ("eval_test_last_value_close_rmse", False), ("eval_val_ic", True),
    ("eval_val_rank_ic", True), ("eval_test_pretrained_ic", True),
    ("eval_val_direction_accuracy", True), ("eval_val_drift_close_mae_skill", True),
    ("eval_val_direction_accuracy_excess", True), ("eval_val_coverage_10_90", None)])
def test_metric_names_say_which_way_is_better(name, better_higher):
    assert maximised(name) is better_higher


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)


@pytest.mark.parametrize("overrides, direction", [
    (["objective=eval_val_ic"], "maximize"), (["objective=eval_val_close_mae"], "minimize"),
    (["phases=both"], "minimize"), (["phases=all"], "minimize"),  # null: the last phase's own metric
    (["phases=all", "eval.metric=rank_ic"], "maximize"),
    (["objective=eval_val_ic", "hydra.sweeper.direction=minimize"], "minimize")])  # the user's word stands
def test_optuna_direction_follows_the_objective(overrides, direction):
    cfg = _compose(*overrides)
    assert OmegaConf.select(cfg, "hydra.sweeper.direction") == direction


def test_coverage_has_no_direction_to_optimise():
    with pytest.raises(ConfigError, match="eval_coverage_10_90 has no better direction"):
        objective_direction(OmegaConf.create({"objective": "eval_coverage_10_90"}))


def test_the_job_table_ranks_a_higher_is_better_objective_highest_first(tmp_path, monkeypatch):
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    monkeypatch.delenv(SWEEP_ID_ENV, raising=False)
    config = OmegaConf.create({"objective": "eval_ic"})
    settings = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep = SweepRun.start(settings, sweep_directions(config), [])
    client = sweep.tracker.client
    for num, ic in enumerate([0.1, 0.5, float("nan"), 0.3]):
        job = client.create_run(sweep.tracker.experiment_id,
                                tags={"mlflow.parentRunId": sweep.run_id, "job_num": str(num)})
        client.log_metric(job.info.run_id, "objective", ic)
        client.set_terminated(job.info.run_id, "FINISHED")
    assert [r["job"] for r in sweep.job_rows()] == [1, 3, 0, 2]  # an undefined IC ranks last
    sweep.end()
    run = client.get_run(sweep.run_id)
    assert run.data.metrics["best_objective"] == pytest.approx(0.5) and run.data.tags["best_job"] == "1"
