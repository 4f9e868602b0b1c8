"""Configs written for facebookresearch's hydra-optuna-sweeper run unchanged under this sweeper
(issue 28, items 1 and 2): its documented examples (the sphere search with ``max_failure_rate``, a
grid sampler, a multi-objective search with a ``direction`` list, a custom search space) as a tiny
Hydra app that is not kronos_exp (tests/fixtures/sphere_app, ``override hydra/sweeper: optuna``),
run through the real Hydra CLI; a failing job is printed and fails the sweep.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[1] / "fixtures" / "sphere_app" / "sphere.py"


def _sphere(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KRONOS_EXP_"))}
    return subprocess.run([sys.executable, str(APP), "--multirun", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _sampled(output: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w)=(\S+)", line)) for line in output.splitlines() if line.startswith("SAMPLED")]


def test_the_documented_sphere_search_samples_the_standard_plugins_space_in_memory(tmp_path):
    # x: range(-5.5, 5.5, step=0.5) is a float range with both ends, y: choice(-5, 0, 5)
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _sampled(proc.stdout)
    assert len(rows) == 4
    grid = {-5.5 + 0.5 * k for k in range(23)}
    assert all(float(r["x"]) in grid and r["y"] in {"-5", "0", "5"} for r in rows), rows
    assert "Storage: in memory" in proc.stderr + proc.stdout
    again = _sphere(tmp_path, "hydra.sweeper.n_trials=4")  # storage: null is in memory: a rerun runs anew
    assert len(_sampled(again.stdout)) == 4 and not list(tmp_path.rglob("*.db"))


def test_an_int_cast_interval_and_a_log_tag_sample_whole_numbers(tmp_path):
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=3", "x=int(interval(-5.0, 5.0))", "y=tag(log, int(interval(1, 10)))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _sampled(proc.stdout)
    assert len(rows) == 3 and all(re.fullmatch(r"-?\d+", r["x"]) and re.fullmatch(r"\d+", r["y"]) for r in rows), rows


def test_jobs_that_raise_print_their_error_and_end_the_sweep_non_zero(tmp_path):
    db = tmp_path / "s.db"
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=3", "+fail=true", f"hydra.sweeper.storage=sqlite:///{db}")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "RuntimeError: sphere job refused" in output
    assert "max_failure_rate=0.0" in output
    states = [t.state for t in optuna.load_study(study_name="sphere", storage=f"sqlite:///{db}").trials]
    assert states == [optuna.trial.TrialState.FAIL]  # the first batch failed: nothing left RUNNING


def test_a_failure_rate_the_config_allows_lets_the_sweep_go_on(tmp_path):
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=2", "+fail=true", "hydra.sweeper.max_failure_rate=1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("RuntimeError: sphere job refused") >= 2


def test_an_invalid_sampled_value_fails_its_trial_with_the_reason_not_the_search(tmp_path):
    db = tmp_path / "s.db"
    proc = _sphere(tmp_path, "--config-name=typed", "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1.0",
                   f"hydra.sweeper.storage=sqlite:///{db}", "epochs=interval(1.1, 1.9)")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "marked FAIL" in output and "epochs" in output
    trials = optuna.load_study(study_name="typed", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all("epochs" in t.user_attrs["fail_reason"] for t in trials)


def test_the_grid_sampler_tries_each_point_once(tmp_path):
    proc = _sphere(tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=10", "x=range(0, 1)",
                   "y=choice(0, 5)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted((r["x"], r["y"]) for r in _sampled(proc.stdout)) == [("0", "0"), ("0", "5"), ("1", "0"), ("1", "5")]


def test_the_documented_multi_objective_search_runs_with_its_direction_list(tmp_path):
    proc = _sphere(tmp_path, "--config-name=multi_objective", "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sampler: NSGAIISampler" in proc.stderr + proc.stdout
    assert "Pareto front" in proc.stderr + proc.stdout


def test_the_documented_custom_search_space_suggests_its_own_parameters(tmp_path):
    proc = _sphere(tmp_path, "--config-name=custom_search_space", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _sampled(proc.stdout)
    assert len(rows) == 2
    assert all(abs(float(r["z"]) - float(r["x"])) <= 0.5 and 0.0 <= float(r["w"]) <= 1.0 for r in rows), rows


@pytest.mark.parametrize("override, says", [
    ("hydra.sweeper.no_such_key=1", "no_such_key"),
    ("+hydra.sweeper.sampler.no_such_arg=5", "no_such_arg"),
    ("hydra.sweeper.sampler._target_=os.system", "hydra.sweeper.sampler._target_=os.system; valid: optuna.samplers."),
])
def test_unknown_keys_and_targets_are_refused(tmp_path, override, says):
    proc = _sphere(tmp_path, "hydra.sweeper.n_trials=1", override)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-3000:]
    assert not _sampled(proc.stdout)
