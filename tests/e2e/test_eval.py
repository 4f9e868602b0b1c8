"""The trained predictor as a user reaches it through processes: `mlflow models serve`, the forecast
command (docs/serving.md's), and an eval metric as a sweep's objective (`-m`), on the session's trained
store (tests/conftest.py ``trained_store``: one `phases=all` run, fine-tuned from the parity checkpoints)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness import Cli, TrainedStore
from kronos_exp.data import sample_path
from model_server import ModelServer

pytestmark = pytest.mark.e2e


def _history(symbol: str = "ACME", rows: int = 64) -> pd.DataFrame:
    """The last rows of one sample series; volume as float, as the pyfunc signature's double columns
    require of a DataFrame in Python (JSON requests are converted by the server)."""
    df = pd.read_csv(sample_path(), parse_dates=["timestamps"]).astype({"volume": float})
    return df[df["symbol"] == symbol].tail(rows).drop(columns=["symbol"]).reset_index(drop=True)


@pytest.mark.slow
def test_an_eval_metric_is_a_sweep_objective(trained):
    cli = Cli(trained.root)
    before = len(cli.runs())
    proc = cli.run("-m", "phases=all", "objective=eval_val_close_mae", "eval.top_p=0.5,0.9", *TrainedStore.SETTINGS,
                   fast=False)
    runs = cli.runs()[before:]
    jobs = [r for r in runs if r.data.tags.get("job_num") is not None and "phase" not in r.data.tags]
    assert len(jobs) == 2
    for job in jobs:
        assert job.data.metrics["objective"] == pytest.approx(job.data.metrics["eval_val_close_mae"])
    skipped = {r.data.tags["phase"]: r.data.tags.get("skipped") for r in runs if r.data.tags.get("phase") in
               ("tokenizer", "predictor")}
    assert set(skipped.values()) == {"true"}  # both trained phases reused: the sweep only forecasts
    sweep = next(r for r in runs if r.data.tags.get("kind") == "sweep")
    assert sweep.data.metrics["best_objective"] == pytest.approx(min(j.data.metrics["eval_val_close_mae"] for j in jobs))
    assert "objective" in proc.stderr + proc.stdout
    header = next(line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("job  "))
    assert header.split()[:8] == ["job", "eval.top_p", "objective", "val_close_mae", "test_close_mae",
                                  "test_vs_last_value", "test_vs_drift", "test_vs_pretrained"]  # quality beside it


def test_mlflow_models_serve_answers_forecast_requests(trained_store, tmp_path):
    import mlflow

    server = ModelServer(tmp_path, trained_store.tracking_uri, Cli(tmp_path).env())
    try:
        history = _history()
        status, body, _ = server.ask(history, timeout=120, pred_len=4, seed=0)
    finally:
        server.stop()
    assert status == 200, body[:2000]
    answer = json.loads(body)["predictions"]
    assert len(answer) == 4 and set(answer[0]) == {"timestamps", "open", "high", "low", "close", "volume", "amount"}
    mlflow.set_tracking_uri(trained_store.tracking_uri)
    local = mlflow.pyfunc.load_model("models:/kronos-predictor/1").predict(history, params={"pred_len": 4, "seed": 0})
    np.testing.assert_allclose([row["close"] for row in answer], local.close, rtol=1e-5)


def _forecast(cwd, store: str, *args: str):
    """``python -m kronos_exp.forecasting <args> tracking_uri=<store>`` in a subprocess started in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "kronos_exp.forecasting", *args, f"tracking_uri={store}"], cwd=cwd,
                          env=Cli(cwd).env(), capture_output=True, text=True, timeout=300)


def test_forecast_command_writes_a_csv_and_a_fan_chart(trained_store, tmp_path):
    """docs/serving.md's command, on a one-series CSV."""
    _history(rows=600).to_csv(tmp_path / "prices.csv", index=False)  # in the working folder; the model in the store
    proc = _forecast(tmp_path, trained_store.tracking_uri, "model=models:/kronos-predictor/1", "data.path=prices.csv",
                     "pred_len=24", "out=forecast.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote forecast.csv (1 series x 24 steps) and forecast.png" in proc.stdout
    table = pd.read_csv(tmp_path / "forecast.csv", parse_dates=["timestamps"])
    assert len(table) == 24 and set(table.series) == {"prices"}
    assert {"open", "high", "low", "close", "volume", "amount", "close_q10", "close_q90"} <= set(table.columns)
    assert (table.close_q10 <= table.close_q90).all()
    assert table.timestamps.iloc[0] > _history().timestamps.iloc[-1]
    assert (tmp_path / "forecast.png").stat().st_size > 10_000


def test_forecast_command_errors_are_one_line(trained_store, tmp_path):
    """The command's user errors end it with exit status 1 and one `error:` line (its other errors,
    in process: tests/forecasting/test_forecast_cli.py)."""
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamps,open,high,low\n2024-01-01,1,2,0.5\n")
    proc = _forecast(tmp_path, trained_store.tracking_uri, "model=models:/kronos-predictor/9", f"data.path={bad}")
    assert proc.returncode == 1
    assert "kronos-predictor, version=9" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith("error:")
