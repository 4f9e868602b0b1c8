"""The real CLI as a user meets it: its help, one user error of each kind (exit status 1, one line;
the others in process: tests/test_main.py), signals, a shared MLflow server."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness import no_traceback, refused_before_any_work, statuses

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
QUICK = ["data.max_train_windows=128", "data.max_eval_windows=32", "tokenizer.epochs=1", "predictor.epochs=1"]




@pytest.mark.parametrize("override, names", [  # the other mistakes in process: tests/test_main.py
    ("predictor.lrr=1", ["predictor.lrr", "lrr"]),
])
def test_config_mistakes_fail_at_compose_time(cli, override, names):
    proc = cli.run(override, check=False, timeout=120)
    assert proc.returncode != 0
    for name in names:
        assert name in proc.stderr
    no_traceback(proc)
    assert cli.runs() == []  # nothing started


def test_help_and_config_printout(cli):
    help_text = subprocess.run([sys.executable, "-m", "kronos_exp", "--help"], capture_output=True, text=True,
                               cwd=cli.root, env=cli.env(), timeout=120).stdout
    for group in ("data:", "tokenizer:", "predictor:", "phases:"):
        assert group in help_text
    assert "threads: null" in help_text and "threads=N: torch's CPU threads" in help_text
    job = subprocess.run([sys.executable, "-m", "kronos_exp", "--cfg", "job", "predictor=small"],
                         capture_output=True, text=True, cwd=cli.root, env=cli.env(), timeout=120).stdout
    assert "d_model: 512" in job and "max_context: 512" in job


@pytest.mark.parametrize("overrides, message", [  # all of them in process: tests/test_main.py
    (["tokenizer.lr=0"], "error: tokenizer.lr=0.0; valid: a finite number > 0"),
])
def test_bad_settings_fail_before_any_phase_trains(cli, overrides, message):
    refused_before_any_work(cli.run(*QUICK, *overrides, check=False), cli, message)


def test_missing_data_file_is_one_clear_line(cli):
    proc = cli.run("data=csv", "data.path=nowhere/prices.csv", check=False)
    assert proc.returncode == 1
    assert "error: no data file matches 'nowhere/prices.csv'" in proc.stderr
    no_traceback(proc)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_runs_killed_with_its_exit_code(cli, signum, code):
    proc = subprocess.Popen(cli.command("tokenizer.epochs=50", fast=False), cwd=cli.root, env=cli.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # wait until the tokenizer phase is training
        if "tokenizer: training" in line:
            break
    else:
        raise AssertionError("the run ended before the tokenizer phase started training")
    time.sleep(2)
    proc.send_signal(signum)
    try:
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, out[-2000:]  # 128 + the signal, so a scheduler can tell it from a failure
    assert "interrupted" in out and "run the same command again to resume" in out
    runs = {r.data.tags.get("phase", "job"): r.info.status for r in cli.runs()}
    assert runs == {"job": "KILLED", "tokenizer": "KILLED"}
    tokenizer_run = next(r for r in cli.runs() if r.data.tags.get("phase") == "tokenizer")
    assert Path(tokenizer_run.data.tags["last_state"]).is_file()  # stopped at a step boundary, state saved


@pytest.mark.slow
def test_readme_ui_command_serves_a_shared_tracking_server(cli, serve):
    """`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` (the manual's command: README.md, docs/index.md) is also a
    tracking server: runs sent to it over HTTP land in that database, registry included."""
    env = cli.env()
    (cli.root / "outputs").mkdir()
    url = serve(["ui", "--backend-store-uri", "sqlite:///outputs/mlflow.db"], cli.root, env)
    proc = subprocess.run([sys.executable, "-m", "kronos_exp", "phases=tokenizer", *QUICK,
                           f"mlflow.tracking_uri={url}", "mlflow.experiment_name=shared"],
                          cwd=cli.root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"open {url}" in proc.stdout + proc.stderr
    body = json.dumps({"max_results": 10}).encode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search", data=body,
                                 headers={"Content-Type": "application/json"})
    assert "shared" in [e["name"] for e in json.load(urllib.request.urlopen(req, timeout=10))["experiments"]]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cli.root / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted(r.data.tags.get("phase", "job") for r in runs) == ["job", "tokenizer"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(client.search_model_versions("name = 'kronos-tokenizer'")) == 1


def test_a_diverged_phase_stops_with_advice_and_registers_nothing(cli):
    proc = cli.run("phases=tokenizer", "tokenizer.lr=1e30", "tokenizer.epochs=1", "data.max_train_windows=64",
                   "data.max_eval_windows=32", fast=False, check=False)
    assert proc.returncode == 1
    assert "error: tokenizer: the validation loss was never finite" in proc.stderr
    assert "Lower tokenizer.lr" in proc.stderr
    no_traceback(proc)
    assert statuses(cli) == ["FAILED", "FAILED"]
    assert cli.versions("kronos-tokenizer") == []
