"""The CLI as a user meets it: errors, published-layout checkpoints, own CSVs, a shared MLflow server."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
QUICK = ["data.max_train_windows=128", "data.max_eval_windows=32", "tokenizer.epochs=1", "predictor.epochs=1"]


def _no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def _statuses(cli):
    return sorted(r.info.status for r in cli.runs())


@pytest.mark.parametrize("override, names", [
    ("predictor.lrr=1", ["predictor.lrr", "lrr"]),
    ("tokenizer.epochs=abc", ["tokenizer.epochs", "abc"]),
    ("phases=everything", ["phases", "everything"]),
])
def test_config_mistakes_fail_at_compose_time(cli, override, names):
    proc = cli.run(override, check=False, timeout=120)
    assert proc.returncode != 0
    for name in names:
        assert name in proc.stderr
    _no_traceback(proc)
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


@pytest.mark.parametrize("override, message", [
    (f"predictor.pretrained={FIXTURE / 'predictor'} tokenizer.arch.s1_bits=5 tokenizer.arch.s2_bits=3",
     "predictor.arch cannot change it; train a tokenizer whose tokenizer.arch.s1_bits matches"),
    ("device=cuda", "error: device='cuda' but this machine has no CUDA device"),
    ("device=tpu9", "error: device='tpu9' is not a device"),
    ("precision=fp8", "error: precision='fp8'; valid: auto, fp32, bf16, fp16"),
    ("precision=fp16", "error: precision=fp16 needs a CUDA device"),
    ("objective=foo_val_loss", "error: objective=foo_val_loss but this run reports only tokenizer_val_loss"),
    ("+predictor.lrr=1", "error: unknown key predictor.lrr; predictor has accumulation_steps"),
])
def test_bad_settings_are_one_clear_line(cli, override, message):
    if override == "device=cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    phases = "phases=both" if "pretrained" in override else "phases=tokenizer"
    extra = [phases, "tokenizer.epochs=1", "data.max_train_windows=32", "data.max_eval_windows=16"]
    proc = cli.run(*override.split(), *extra, fast=False, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr[-2000:]
    _no_traceback(proc)
    assert "RUNNING" not in _statuses(cli)


@pytest.mark.parametrize("overrides, message", [
    (["tokenizer.lr=0"], "error: tokenizer.lr=0.0; valid: a finite number > 0"),
    (["mlflow.experiment_name=''"], "error: mlflow.experiment_name=''; valid: a non-empty name"),
    (["predictor.batch_size=-4"], "error: predictor.batch_size=-4; valid: an integer >= 1"),
    (["predictor.arch.s1_bits=3"], "error: predictor s1_bits=3 but the tokenizer has s1_bits=4"),
])
def test_bad_settings_fail_before_any_phase_trains(cli, overrides, message):
    proc = cli.run(*QUICK, *overrides, check=False)
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("error")] == [
        next(line for line in proc.stderr.splitlines() if line.startswith(message))]
    _no_traceback(proc)
    assert "training" not in proc.stdout + proc.stderr
    assert cli.runs() == []  # refused before MLflow was touched: nothing RUNNING, nothing at all


def test_missing_data_file_is_one_clear_line(cli):
    proc = cli.run("data=csv", "data.path=nowhere/prices.csv", check=False)
    assert proc.returncode == 1
    assert "error: no CSV matches 'nowhere/prices.csv'" in proc.stderr
    _no_traceback(proc)


def test_predictor_alone_without_any_tokenizer_says_what_to_do(cli):
    proc = cli.run("phases=predictor", check=False)
    assert proc.returncode == 1
    assert "needs a tokenizer" in proc.stderr and "phases=both" in proc.stderr
    _no_traceback(proc)
    assert _statuses(cli) == ["FAILED"]  # the job run ends FAILED, never RUNNING


def test_failure_inside_a_phase_marks_runs_failed(cli):
    damaged = cli.root / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((FIXTURE / "predictor" / "config.json").read_text())
    (damaged / "model.safetensors").write_bytes((FIXTURE / "predictor" / "model.safetensors").read_bytes()[:100])
    proc = cli.run(*QUICK, f"predictor.pretrained={damaged}", check=False)
    assert proc.returncode == 1
    assert f"cannot read {damaged / 'model.safetensors'}" in proc.stderr
    _no_traceback(proc)
    runs = {r.data.tags.get("phase", "job"): r.info.status for r in cli.runs()}
    assert runs == {"job": "FAILED", "tokenizer": "FINISHED", "predictor": "FAILED"}


def test_offline_hub_id_explains_how_to_get_weights(cli):
    proc = cli.run("tokenizer.pretrained=NeoQuasar/Kronos-Tokenizer-base", check=False)
    assert proc.returncode == 1
    assert "NeoQuasar/Kronos-Tokenizer-base" in proc.stderr and "--local-dir" in proc.stderr
    _no_traceback(proc)


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


def test_fine_tunes_from_published_layout_checkpoints(cli):
    proc = cli.run(*QUICK, f"tokenizer.pretrained={FIXTURE / 'tokenizer'}",
                   f"predictor.pretrained={FIXTURE / 'predictor'}")
    # MLflow records the architecture that trained (the checkpoint's, d_model 32), not the preset's (64).
    predictor_config = json.loads((FIXTURE / "predictor" / "config.json").read_text())
    for run in cli.runs():
        if run.data.tags.get("phase") in (None, "predictor"):
            assert run.data.params["predictor.arch.d_model"] == str(predictor_config["d_model"])
            assert run.data.params["predictor.arch.n_layers"] == str(predictor_config["n_layers"])
    assert f"predictor: starting from the pretrained weights {FIXTURE / 'predictor'}" in proc.stdout + proc.stderr
    for name, folder in (("kronos-tokenizer", "tokenizer"), ("kronos-predictor", "predictor")):
        version = cli.versions(name)[0]
        run = cli.client().get_run(version.run_id)
        local = cli.client().download_artifacts(run.info.run_id, "checkpoint", str(cli.root / name))
        saved = json.loads((Path(local) / "config.json").read_text())
        assert saved == json.loads((FIXTURE / folder / "config.json").read_text())


def _yahoo_daily(path: Path, days: int = 1000) -> None:
    rng = np.random.default_rng(1)
    close = 150 * np.exp(np.cumsum(rng.normal(0, 0.01, days)))
    open_ = close * (1 + rng.normal(0, 0.003, days))
    df = pd.DataFrame({
        "Date": pd.bdate_range("2020-01-01", periods=days).strftime("%Y-%m-%d"),
        "Open": open_, "High": np.maximum(open_, close) * 1.01, "Low": np.minimum(open_, close) * 0.99,
        "Close": close, "Adj Close": close * 0.98, "Volume": rng.integers(1_000_000, 5_000_000, days),
    })
    df.to_csv(path, index=False)


def test_yahoo_export_trains_without_column_config(cli):
    _yahoo_daily(cli.root / "AAPL.csv")
    proc = cli.run("phases=tokenizer", "data=csv", "data.path=AAPL.csv", "tokenizer.epochs=1",
                   "data.lookback_window=32", "data.predict_window=8", "threads=1", fast=False)
    (run,) = [r for r in cli.runs() if r.data.tags.get("phase") == "tokenizer"]
    assert run.info.status == "FINISHED" and "val_loss" in run.data.metrics
    # The thread count chosen (here given) is said once, in the banner, and kept on the job run.
    assert (proc.stdout + proc.stderr).count("  threads  1 (threads=1)") == 1
    (job,) = [r for r in cli.runs() if "phase" not in r.data.tags]
    assert job.data.tags["threads"] == "1"


def test_readme_ui_command_serves_a_shared_tracking_server(cli, serve):
    """`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` (the README's command) is also a
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
    _no_traceback(proc)
    assert _statuses(cli) == ["FAILED", "FAILED"]
    assert cli.versions("kronos-tokenizer") == []
