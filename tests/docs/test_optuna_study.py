"""docs/sweeps.md, "Seeing a whole study": Optuna's command line and optuna-dashboard, run as the page
shows them from the working folder, read a study stored as a search stores it (``outputs/optuna.db``,
study ``kronos_exp``, trials carrying their MLflow run and model version), and print what the page shows."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from harness import page

BIN = Path(sys.executable).parent
# Study.set_metric_names, as a search calls it (the dashboard shows the objectives' names), is experimental.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _commands(prefix: str) -> list[str]:
    text = page("sweeps")
    section = text[text.index("### Seeing a whole study"):]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in section.splitlines() if line.startswith(prefix)]


@pytest.fixture
def study_folder(tmp_path):
    """A working folder whose outputs/optuna.db holds study kronos_exp as a search leaves it: a
    finished trial with its MLflow run and model version, a pruned one with its intermediate losses."""
    (tmp_path / "outputs").mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="kronos_exp", storage=f"sqlite:///{tmp_path}/outputs/optuna.db",
                                direction="minimize")
    study.set_metric_names(["predictor_val_loss"])
    for lr, value, state in ((0.004, 1.77, optuna.trial.TrialState.COMPLETE),
                             (0.0003, None, optuna.trial.TrialState.PRUNED)):
        trial = study.ask({"predictor.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
        trial.set_user_attr("mlflow_run_id", f"run{trial.number}")
        trial.report(3.36, 0)
        if state == optuna.trial.TrialState.COMPLETE:
            trial.set_user_attr("mlflow_model_version", "models:/kronos-predictor/1")
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    return tmp_path


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    args[0] = str(BIN / args[0])  # this environment's
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_optunas_command_line_shows_every_trial_and_the_best(study_folder):
    names, trials, best = _commands("optuna ")
    assert _run(names, study_folder).stdout.split() == ["kronos_exp"]
    listed = yaml.safe_load(_run(trials, study_folder).stdout)
    assert [(t["number"], t["state"]) for t in listed] == [(0, "COMPLETE"), (1, "PRUNED")]
    assert listed[0]["user_attrs"] == {"mlflow_run_id": "run0", "mlflow_model_version": "models:/kronos-predictor/1"}
    shown = yaml.safe_load(re.search(r"\$ optuna best-trial [^\n]+\n(.*?)```", page("sweeps"), re.S).group(1))
    printed = yaml.safe_load(_run(best, study_folder).stdout)
    assert printed.keys() == shown.keys()  # the page's output is this command's
    assert printed["value"] == {"predictor_val_loss": 1.77} and printed["number"] == 0
    assert {"mlflow_run_id", "mlflow_model_version"} <= set(printed["user_attrs"]) <= set(shown["user_attrs"])


@pytest.mark.skipif(shutil.which("optuna-dashboard", path=str(BIN)) is None, reason="optuna-dashboard (dev extra)")
def test_optuna_dashboard_serves_the_study(study_folder):
    (command,) = _commands("optuna-dashboard ")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [str(BIN / "optuna-dashboard"), *shlex.split(command)[1:], "--port", str(port)]
    proc = subprocess.Popen(args, cwd=study_folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                    studies = json.load(answer)["study_summaries"]
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "optuna-dashboard did not come up"
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["kronos_exp"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}?after=0",
                                    timeout=10) as answer:
            trials = json.load(answer)["trials"]
        assert [t["state"] for t in trials] == ["Complete", "Pruned"]
        assert trials[1]["intermediate_values"]  # the losses the pruner judged
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
