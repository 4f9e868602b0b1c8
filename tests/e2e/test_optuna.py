"""The Optuna sweeper end to end (issue 20): a killed search continues when rerun, two processes
share one study, a hopeless trial is pruned, the direction comes from the metric, and several
objectives give a Pareto front. Every search runs the real CLI on one store whose tokenizer is
trained once (phases=predictor), on tiny data, with its own study in the default storage
(optuna.db beside the MLflow store).
"""
from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from harness import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = ["data.max_train_windows=64", "data.max_eval_windows=16", "tokenizer.epochs=1", "predictor.epochs=2"]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def store(module_cli):
    """The module's store, with the tokenizer every search's predictor builds on."""
    Pipeline(module_cli.root).run("phases=tokenizer", *TINY, fast=False)  # in this process: no search in it
    return module_cli


def _search(study: str, *overrides: str) -> list[str]:
    """A search of the predictor's learning rate alone (params=null: the command line's sweep),
    unpruned unless the overrides say otherwise."""
    return ["hparams_search=optuna", "phases=predictor", *TINY, "hydra.sweeper.params=null",
            "predictor.lr=tag(log, interval(1e-4, 1e-2))", f"hydra.sweeper.study_name={study}",
            "hydra.sweeper.pruner=none", *overrides]


def _study(cli, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cli.root / 'optuna.db'}")


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def _job_runs(cli, study: str):
    return [r for r in cli.runs() if r.data.tags.get("optuna_study") == study]


def _assert_linked_both_ways(cli, study: optuna.Study) -> None:
    """Every finished trial names its job run, and that run names the trial."""
    runs = {r.info.run_id: r for r in _job_runs(cli, study.study_name)}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna_trial"] == str(trial.number)


def _wait_for_trial(cli, name: str, number: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        try:
            trials = _study(cli, name).get_trials(deepcopy=False)
        except Exception:  # the database or the study is not created yet
            trials = []
        if len(trials) > number and trials[number].state.name == "RUNNING":
            return
        time.sleep(0.2)
    raise AssertionError(f"trial {number} of {name} never ran")


def _wait_for_a_training_state(cli, proc: subprocess.Popen, timeout: float = 240):
    """The RUNNING predictor run, once it saved a training state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        for run in cli.runs():
            state = run.data.tags.get("last_state")
            if run.info.status == "RUNNING" and run.data.tags.get("phase") == "predictor" and state and \
                    Path(state).is_file():
                return run
        time.sleep(0.2)
    raise AssertionError("no predictor run saved a training state")


def test_a_search_killed_during_its_third_trial_continues_when_rerun(store):
    """The rerun first finishes the killed trial (its params, its job resuming the predictor from
    its training state), then samples the one the search still owed."""
    command = store.command(*_search("killed", "hydra.sweeper.n_trials=4", "skip_existing=false",
                                     "predictor.epochs=3"), fast=False)
    proc = subprocess.Popen(command, cwd=store.root, env=store.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_trial(store, "killed", 2, proc)
        killed = _wait_for_a_training_state(store, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _states(_study(store, "killed")) == ["COMPLETE", "COMPLETE", "RUNNING"]
    rerun = store.run(*_search("killed", "hydra.sweeper.n_trials=4", "skip_existing=false", "predictor.epochs=3"),
                      fast=False)
    study = _study(store, "killed")
    # The killed trial is failed, never left running; the rerun ran the 2 trials the first search still owed.
    assert _states(study) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    output = rerun.stdout + rerun.stderr
    assert "Trials to run: 2 of n_trials=4" in output
    trials = study.get_trials(deepcopy=False)
    assert trials[3].params == trials[2].params and trials[3].user_attrs["retry_of"] == 2
    resumed = [r for r in store.runs() if r.data.tags.get("resumed_from") == killed.info.run_id]
    assert len(resumed) == 1 and resumed[0].info.status == "FINISHED"
    assert resumed[0].data.tags["mlflow.parentRunId"] == trials[3].user_attrs["mlflow_run_id"]
    assert "open the MLflow UI (every trial of study 'killed', across its searches)" in output
    _assert_linked_both_ways(store, study)
    running = [r.info.run_id for r in store.runs() if r.info.status == "RUNNING"]
    assert not running, running  # the killed process's runs were ended by the rerun
    # Once the study holds its n_trials, the same command runs nothing and says so; the sweep ends FINISHED.
    again = store.run(*_search("killed", "hydra.sweeper.n_trials=4", "skip_existing=false"), fast=False)
    assert "already holds the 4 finished trial(s) this search asks for (n_trials=4)" in again.stdout + again.stderr
    assert len(_study(store, "killed").trials) == 5
    assert store.runs()[-1].data.tags["kind"] == "sweep" and store.runs()[-1].info.status == "FINISHED"


def test_two_processes_started_together_share_one_study(store):
    command = store.command(*_search("shared", "hydra.sweeper.n_trials=3"), fast=False)
    procs = [subprocess.Popen(command, cwd=store.root, env=store.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
    study = _study(store, "shared")
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    # Each trial taken once: six job runs, one per trial, and no learning rate sampled twice.
    runs = _job_runs(store, "shared")
    assert sorted(int(r.data.tags["optuna_trial"]) for r in runs) == list(range(6))
    assert len({t.params["predictor.lr"] for t in trials}) == 6
    assert len({t.user_attrs["kronos_worker"] for t in trials}) == 2
    _assert_linked_both_ways(store, study)


def test_a_diverging_learning_rate_is_pruned(store):
    """lr=5 diverges (a validation loss ~100x the others'): the median pruner stops it after its
    first of 3 epochs. The sampler's seed orders the trials 1e-3, 1e-3, 5."""
    proc = store.run(*_search("pruned", "hydra.sweeper.n_trials=3", "predictor.epochs=3", "predictor.lr=choice(1e-3, 5)",
                              "hydra.sweeper.sampler.seed=6", "hydra.sweeper.pruner=median",
                              "hydra.sweeper.pruner_startup_trials=1"), fast=False)
    study = _study(store, "pruned")
    trials = study.get_trials(deepcopy=False)
    assert [(t.params["predictor.lr"], t.state.name) for t in trials] == [
        (1e-3, "COMPLETE"), (1e-3, "COMPLETE"), (5, "PRUNED")]
    assert list(trials[2].intermediate_values) == [0]  # stopped after its first epoch
    job = next(r for r in _job_runs(store, "pruned") if r.data.tags["optuna_trial"] == "2")
    assert job.info.status == "KILLED" and job.data.tags["pruned"] == "true"
    history = store.client().get_metric_history(job.info.run_id, "trial_val_loss")  # what the pruner judged
    assert [(m.step, m.value) for m in history] == list(trials[2].intermediate_values.items())
    assert job.data.params["predictor.lr"] == "5"  # as the trial holds it, not the typed config's 5.0
    phase = next(r for r in store.runs() if r.data.tags.get("mlflow.parentRunId") == job.info.run_id)
    assert phase.info.status == "KILLED" and phase.data.tags["stopped"].startswith("pruned: trial 2")
    assert trials[2].user_attrs["mlflow_run_id"] == job.info.run_id
    lines = (proc.stdout + proc.stderr).splitlines()
    header = next(line.split() for line in lines if line.startswith("job ") and "predictor.lr" in line)
    rows = [line.split() for line in lines if re.match(r"\d+\s", line)]
    row = next(r for r in rows if r[header.index("predictor.lr")] == "5")  # a column per swept parameter
    assert row[-1] == "PRUNED", row  # the status, the last column


def test_direction_from_the_metrics_and_a_pareto_front_of_two_objectives(store):
    """objective=[eval_val_close_mae,eval_val_ic]: an error minimised and a correlation maximised,
    from their names; the sweep table marks the jobs no other job beats on both."""
    proc = store.run(*_search("pareto", "hydra.sweeper.n_trials=3", "phases=all",
                              "objective=[eval_val_close_mae,eval_val_ic]", "eval.windows=8", "eval.sample_count=1",
                              "eval.pred_len=8"), fast=False)
    output = proc.stdout + proc.stderr
    study = _study(store, "pareto")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert "Directions: ['minimize', 'maximize']" in output
    assert _states(study) == ["COMPLETE"] * 3
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r"sweep \S+: 3 jobs, best first", line))
    assert lines[start + 1].startswith("every job: ")  # the overrides all jobs share, once
    header = start + 2
    assert lines[header].split()[:4] == ["job", "predictor.lr", "pareto", "objective"], lines[header]
    rows = lines[header + 2:header + 5]
    front = {t.number for t in study.best_trials}
    assert sum(" * " in row for row in rows) == len(front) >= 1, rows
    for run in _job_runs(store, "pareto"):
        metrics = run.data.metrics
        assert [metrics["objective_0"], metrics["objective_1"]] == [metrics["eval_val_close_mae"],
                                                                   metrics["eval_val_ic"]]
    sweep_dirs = sorted((store.root / "outputs" / "multirun").glob("*/*"), key=lambda p: p.stat().st_mtime)
    results = yaml.safe_load((sweep_dirs[-1] / "optimization_results.yaml").read_text())
    assert {s["trial"] for s in results["solutions"]} == front


BROKEN_PHASE = '''
from kronos_exp.phases import PredictorPhase


class BrokenPhase(PredictorPhase):
    """A predictor phase with a bug: its loss raises what no user setting causes."""

    def loss(self, model, batch):
        raise RuntimeError("planted bug in BrokenPhase.loss")
'''


def test_a_trial_that_crashes_prints_its_traceback(store):
    """The sweep's closing line says a failed job's error is printed above: it is, traceback and all."""
    (store.root / "broken_phase.py").write_text(BROKEN_PHASE)
    proc = store.run(*_search("crashed", "hydra.sweeper.n_trials=1", "skip_existing=false",
                              "phases.predictor._target_=broken_phase.BrokenPhase"), fast=False, check=False)
    output = proc.stdout + proc.stderr
    assert "trial 0 failed:" in output, output[-3000:]
    assert "RuntimeError: planted bug in BrokenPhase.loss" in output
    assert 'broken_phase.py", line' in output  # where it was raised
    assert _states(_study(store, "crashed")) == ["FAIL"]
