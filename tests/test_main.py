"""What `python -m kronos_exp` says for each user error, and runs a user's own CSV with, run in this
process (compose + ``pipeline.run``; tests/harness.py Pipeline gives the exit status and output
the CLI would have): one clear line, nothing left RUNNING. tests/e2e/test_cli.py runs one error of
each kind through the real CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import PARITY as FIXTURE
from harness import no_traceback, refused_before_any_work, statuses

QUICK = ["data.max_train_windows=128", "data.max_eval_windows=32", "tokenizer.epochs=1", "predictor.epochs=1"]




@pytest.mark.parametrize("override, names", [
    ("predictor.lrr=1", ["predictor.lrr", "lrr"]),
    ("tokenizer.epochs=abc", ["tokenizer.epochs", "abc"]),
    ("phases=everything", ["phases", "everything"]),
])
def test_config_mistakes_fail_at_compose_time(pipeline, override, names):
    proc = pipeline.run(override, check=False, timeout=120)
    assert proc.returncode != 0
    for name in names:
        assert name in proc.stderr
    no_traceback(proc)
    assert pipeline.runs() == []  # nothing started


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
def test_bad_settings_are_one_clear_line(pipeline, override, message):
    if override == "device=cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    phases = "phases=both" if "pretrained" in override else "phases=tokenizer"
    extra = [phases, "tokenizer.epochs=1", "data.max_train_windows=32", "data.max_eval_windows=16"]
    proc = pipeline.run(*override.split(), *extra, fast=False, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr[-2000:]
    no_traceback(proc)
    assert "RUNNING" not in statuses(pipeline)


@pytest.mark.parametrize("overrides, message", [
    (["tokenizer.lr=0"], "error: tokenizer.lr=0.0; valid: a finite number > 0"),
    (["mlflow.experiment_name=''"], "error: mlflow.experiment_name=''; valid: a non-empty name"),
    (["predictor.batch_size=-4"], "error: predictor.batch_size=-4; valid: an integer >= 1"),
    (["predictor.arch.s1_bits=3"], "error: predictor s1_bits=3 but the tokenizer has s1_bits=4"),
])
def test_bad_settings_fail_before_any_phase_trains(pipeline, overrides, message):
    refused_before_any_work(pipeline.run(*QUICK, *overrides, check=False), pipeline, message)


def test_predictor_alone_without_any_tokenizer_says_what_to_do(pipeline):
    proc = pipeline.run("phases=predictor", check=False)
    assert proc.returncode == 1
    assert "needs a tokenizer" in proc.stderr and "phases=both" in proc.stderr
    no_traceback(proc)
    assert statuses(pipeline) == ["FAILED"]  # the job run ends FAILED, never RUNNING


def test_failure_inside_a_phase_marks_runs_failed(pipeline):
    damaged = pipeline.root / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((FIXTURE / "predictor" / "config.json").read_text())
    (damaged / "model.safetensors").write_bytes((FIXTURE / "predictor" / "model.safetensors").read_bytes()[:100])
    proc = pipeline.run(*QUICK, f"predictor.pretrained={damaged}", check=False)
    assert proc.returncode == 1
    assert f"cannot read {damaged / 'model.safetensors'}" in proc.stderr
    no_traceback(proc)
    runs = {r.data.tags.get("phase", "job"): r.info.status for r in pipeline.runs()}
    assert runs == {"job": "FAILED", "tokenizer": "FINISHED", "predictor": "FAILED"}


def test_offline_hub_id_explains_how_to_get_weights(pipeline):
    proc = pipeline.run("tokenizer.pretrained=NeoQuasar/Kronos-Tokenizer-base", check=False)
    assert proc.returncode == 1
    assert "NeoQuasar/Kronos-Tokenizer-base" in proc.stderr and "--local-dir" in proc.stderr
    no_traceback(proc)


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


def test_yahoo_export_trains_without_column_config(pipeline):
    _yahoo_daily(pipeline.root / "AAPL.csv")
    proc = pipeline.run("phases=tokenizer", "data=csv", "data.path=AAPL.csv", "tokenizer.epochs=1",
                   "data.lookback_window=32", "data.predict_window=8", "threads=1", fast=False)
    (run,) = [r for r in pipeline.runs() if r.data.tags.get("phase") == "tokenizer"]
    assert run.info.status == "FINISHED" and "val_loss" in run.data.metrics
    # The thread count chosen (here given) is said once, in the banner, and kept on the job run.
    assert (proc.stdout + proc.stderr).count("  threads  1 (threads=1)") == 1
    (job,) = [r for r in pipeline.runs() if "phase" not in r.data.tags]
    assert job.data.tags["threads"] == "1"
