"""What a search leaves behind (issue 28, item 3): optimization_results.yaml with
hydra-optuna-sweeper's keys in their meaning (``name: optuna``, ``best_params``/``best_value``, or
``solutions`` of ``params`` and ``values``) and kronos_exp's beside them; the study's objective names,
which optuna-dashboard shows; and each trial's registered model version, named on the trial and
tagged with it. The sphere app (tests/fixtures/sphere_app, not kronos_exp) for what any app gets,
one kronos search for the model versions.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
import yaml

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[1] / "fixtures" / "sphere_app" / "sphere.py"

TINY = ["data.max_train_windows=64", "data.max_eval_windows=16", "tokenizer.epochs=1", "predictor.epochs=2"]


def _sphere(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KRONOS_EXP_"))}
    return subprocess.run([sys.executable, str(APP), "--multirun", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _results(folder: Path) -> dict:
    return yaml.safe_load((folder / "optimization_results.yaml").read_text())


def test_one_objective_the_standard_results_our_keys_and_the_objective_named_in_the_study(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={db}",
                   f"hydra.sweep.dir={tmp_path / 'first'}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="sphere", storage=db)
    best = study.best_trial
    assert _results(tmp_path / "first") == {"name": "optuna", "best_params": best.params, "best_value": best.value,
                                            "study_name": "sphere", "best_trial": best.number,
                                            "objectives": ["value"]}
    assert f"Best parameters: {best.params}" in output
    assert float(re.search(r"Best value: (\S+)$", output, re.M).group(1)) == best.value  # the number alone
    assert study.metric_names == ["value"]  # what optuna-dashboard shows instead of "Objective 0"
    # A process rejoining the study with the same objective goes on.
    again = _sphere(tmp_path, "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={db}",
                    f"hydra.sweep.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(study.trials) == 4 and study.metric_names == ["value"]


def test_a_study_of_another_objective_is_refused_and_one_without_names_gets_them(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.create_study(study_name="other", storage=db).set_metric_names(["loss"])
    optuna.create_study(study_name="unnamed", storage=db)  # as hydra-optuna-sweeper (or an older kronos_exp) made it
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={db}",
                   "hydra.sweeper.study_name=other")
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert ("study 'other' optimises ['loss'], and this search returns ['value']; give this search its own "
            "hydra.sweeper.study_name=<name>") in proc.stderr, proc.stderr[-3000:]
    other = optuna.load_study(study_name="other", storage=db)
    assert other.trials == [] and other.metric_names == ["loss"]
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={db}",
                   "hydra.sweeper.study_name=unnamed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert optuna.load_study(study_name="unnamed", storage=db).metric_names == ["value"]


def test_several_objectives_are_the_standard_solutions_each_with_its_trial(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc = _sphere(tmp_path, "--config-name=multi_objective", "hydra.sweeper.n_trials=4",
                   f"hydra.sweeper.storage={db}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="multi-objective", storage=db)
    front = sorted(study.best_trials, key=lambda t: t.number)
    results = _results(tmp_path / "sweep")
    assert {k: v for k, v in results.items() if k != "solutions"} == {
        "name": "optuna", "study_name": "multi-objective", "objectives": ["value_0", "value_1"]}
    assert sorted(results["solutions"], key=lambda s: s["trial"]) == [
        {"params": t.params, "values": t.values, "trial": t.number} for t in front]
    assert f"Number of Pareto solutions: {len(front)}" in output
    assert all(f"    Values: {t.values}, Params: {t.params}" in output for t in front), output[-3000:]
    assert study.metric_names == ["value_0", "value_1"]


@pytest.mark.slow
def test_each_trial_names_the_model_version_it_used_and_the_version_its_trial(cli, monkeypatch):
    """Three trials of two learning rates: a rate drawn again reuses the version of the trial that
    trained it, which the trial names and whose tags stay the trainer's; the tokenizer, trained by
    trial 0 and reused after, is tagged with trial 0."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli.run("hparams_search=optuna", "phases=both", *TINY, "hydra.sweeper.params=null",
            "predictor.lr=choice(1e-3, 2e-3)", "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=versions",
            "hydra.sweeper.pruner=none", fast=False)
    study = optuna.load_study(study_name="versions", storage=f"sqlite:///{cli.root / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert study.metric_names == ["predictor_val_loss"]
    trainer = {}  # learning rate -> the trial that trained it
    for t in trials:
        trainer.setdefault(t.params["predictor.lr"], t.number)
    predictors = {str(v.version): v for v in cli.versions("kronos-predictor")}
    assert len(predictors) == len(trainer) < 3, predictors
    for t in trials:
        name, version = t.user_attrs["mlflow_model_version"][len("models:/"):].split("/")
        assert name == "kronos-predictor"
        tags = predictors[version].tags
        assert (tags["optuna_study"], tags["optuna_trial"]) == ("versions", str(trainer[t.params["predictor.lr"]]))
    [tokenizer] = cli.versions("kronos-tokenizer")
    assert (tokenizer.tags["optuna_study"], tokenizer.tags["optuna_trial"]) == ("versions", "0")
    [folder] = [p.parent for p in (cli.root / "outputs" / "multirun").glob("*/*/optimization_results.yaml")]
    results, best = _results(folder), study.best_trial
    assert (results["name"], results["best_value"], results["best_trial"]) == ("optuna", best.value, best.number)
    assert results["best_model_version"] == best.user_attrs["mlflow_model_version"]
