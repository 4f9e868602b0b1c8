"""The eval step, in this process: what a `phases=all` run measures (the session's trained store,
fine-tuned from a published-layout checkpoint, so the pretrained weights are measured too),
evaluating a registered predictor alone, and the registered predictor as a pyfunc model."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from harness import PARITY as FIXTURE
from kronos_exp.data import DataConfig, build_datasets, sample_path
from kronos_exp.tracking.registry import version_files

SMALL = ["data.max_train_windows=128", "data.max_eval_windows=32", "tokenizer.epochs=1", "predictor.epochs=1"]
POINT = ("close_mae", "close_rmse", "close_mape", "direction_accuracy", "ic", "rank_ic")
SAMPLED = ("crps", "coverage_10_90")


def _by_phase(runs):
    return {r.data.tags.get("phase"): r for r in runs if "phase" in r.data.tags}


def _history(symbol: str = "ACME", rows: int = 64) -> pd.DataFrame:
    """The last rows of one sample series; volume as float, as the pyfunc signature's double columns
    require of a DataFrame in Python (JSON requests are converted by the server)."""
    df = pd.read_csv(sample_path(), parse_dates=["timestamps"]).astype({"volume": float})
    return df[df["symbol"] == symbol].tail(rows).drop(columns=["symbol"]).reset_index(drop=True)


def test_all_measures_the_fine_tuned_model_against_baselines_and_pretrained(trained_store):
    runs = trained_store.runs()
    phases = _by_phase(runs)
    assert set(phases) == {"tokenizer", "predictor", "eval"}
    assert all(r.info.status == "FINISHED" for r in runs)
    ev = phases["eval"].data.metrics
    for prefix in ("test_", "test_pretrained_"):
        assert {prefix + m for m in POINT + SAMPLED} <= set(ev)
        assert {prefix + "close_mae_skill", prefix + "crps_skill", prefix + "direction_accuracy_excess"} <= set(ev)
    for prefix in ("test_last_value_", "test_drift_", "val_last_value_", "val_drift_"):
        assert {prefix + m for m in ("close_mae", "close_rmse", "close_mape", "direction_accuracy")} <= set(ev)
    assert "test_drift_ic" in ev and "test_last_value_ic" not in ev  # a constant return forecast has no correlation
    assert ev["test_close_mae_skill"] == pytest.approx(1 - ev["test_close_mae"] / ev["test_last_value_close_mae"])
    assert 0 <= ev["test_coverage_10_90"] <= 1 and ev["test_crps"] > 0
    assert {f"val_{m}" for m in POINT + SAMPLED} <= set(ev)  # the split that chooses
    assert not any(k.startswith("val_pretrained") for k in ev)  # the published weights choose nothing
    by_step = trained_store.client().get_metric_history(phases["eval"].info.run_id, "test_close_mae_by_step")
    assert sorted(m.step for m in by_step) == list(range(1, 9))

    # The model against each reference on the test split: the difference, its interval, p, a verdict.
    job_run = next(r for r in runs if "phase" not in r.data.tags)
    for reference in ("last_value", "drift", "pretrained"):
        name = f"test_close_mae_vs_{reference}"
        assert ev[name] == pytest.approx(ev["test_close_mae"] - ev[f"test_{reference}_close_mae"])
        assert ev[f"{name}_low"] <= ev[name] <= ev[f"{name}_high"] and 0 <= ev[f"{name}_p"] <= 1
        verdict = job_run.data.tags[f"eval_verdict_vs_{reference}"]
        assert verdict == ("better" if ev[f"{name}_high"] < 0 else "worse" if ev[f"{name}_low"] > 0
                           else "no significant difference")
        assert (ev[f"{name}_p"] < 0.05) == (verdict != "no significant difference")
        assert f"vs {reference}" in trained_store.outcome.output
    assert "Diebold-Mariano" in phases["eval"].data.tags["eval_verdicts"]
    assert phases["eval"].data.tags["eval_ic"].startswith("cross-sectional")  # three series: a panel

    # Summarised on the job run, where the compare view and the sweep table read them.
    job = job_run.data.metrics
    assert job["eval_test_close_mae"] == pytest.approx(ev["test_close_mae"])
    assert job["eval_test_pretrained_close_mae"] == pytest.approx(ev["test_pretrained_close_mae"])
    assert job["objective"] == pytest.approx(ev["val_close_mae"])  # chosen on validation, never on test
    assert {"tokenizer_val_loss", "predictor_val_loss", "eval_test_last_value_close_mae"} <= set(job)
    assert "chooses on val" in trained_store.outcome.output
    assert "reports on test" in trained_store.outcome.output

    client = trained_store.client()
    plots = {a.path for a in client.list_artifacts(phases["eval"].info.run_id, "plots")}
    assert {"plots/fan_ACME.png", "plots/fan_GLOBEX.png", "plots/fan_INITECH.png",
            "plots/metrics_by_horizon.png", "plots/backtest_equity.png"} <= plots
    for strategy in ("", "pretrained_", "drift_", "buy_and_hold_"):  # the test forecasts traded
        assert {f"test_{strategy}backtest_{m}" for m in ("sharpe", "sharpe_se", "cumulative_return",
                                                         "annualised_return", "max_drawdown", "turnover")} <= set(ev)
    assert ("backtest (k=1, 5 bp per turnover, 8 periods), annualised Sharpe with its standard error (Lo 2002): "
            "model") in trained_store.outcome.output


def test_forecasts_are_of_unseen_test_windows_and_metrics_match_them(trained_store, tmp_path):
    eval_run = _by_phase(trained_store.runs())["eval"]
    local = trained_store.client().download_artifacts(eval_run.info.run_id, "forecasts.csv", str(tmp_path))
    rows = pd.read_csv(local, parse_dates=["timestamp", "origin_date"])
    assert set(rows.split) == {"val", "test"}
    assert len(rows) == 24 * 8 * 3 + 24 * 8 * 4  # origins x steps x forecasters (val: no pretrained)
    rows = rows[rows.split == "test"]
    # A panel's origins are dates every series forecasts from: 8 dates x 3 series.
    assert rows.groupby("origin_date").series.nunique().tolist() == [3] * 8
    ev = eval_run.data.metrics
    for name, prefix in (("model", ""), ("pretrained", "pretrained_"), ("last_value", "last_value_")):
        mine = rows[rows.forecaster == name]
        assert (mine.close - mine.actual_close).abs().mean() == pytest.approx(ev[f"test_{prefix}close_mae"], rel=1e-5)
    for _, origins in rows[rows.forecaster == "model"].groupby("series"):  # horizons do not overlap
        starts = origins.groupby("origin").timestamp.min().sort_values()
        ends = origins.groupby("origin").timestamp.max().loc[starts.index]
        assert (starts.to_numpy()[1:] > ends.to_numpy()[:-1]).all()
    # Every forecast step lies in the test split of its series, and the actuals are the data's closes.
    data = build_datasets(DataConfig(symbol_column="symbol", stride=2, max_train_windows=384, max_eval_windows=96))
    for series in data.series:
        test_start = series.timestamps[len(series) - data.test.lengths[data.test.names.index(series.name)]]
        mine = rows[rows.series == series.name]
        assert len(mine) and (mine.timestamp.to_numpy() >= test_start).all()
        closes = pd.Series(series.values[:, 3].astype(np.float64), index=pd.DatetimeIndex(series.timestamps))
        np.testing.assert_allclose(mine.actual_close, closes.loc[mine.timestamp].to_numpy(), rtol=1e-6)
    last = rows[rows.forecaster == "last_value"].groupby("origin").close.nunique()
    assert (last == 1).all()  # a random walk repeats the last close


def test_the_pretrained_forecaster_sees_the_same_origins_and_draws(trained):
    """Evaluating the published weights against themselves: identical forecasts, a difference of exactly 0."""
    fixture = [f"eval.predictor={FIXTURE / 'predictor'}", f"eval.tokenizer={FIXTURE / 'tokenizer'}"]
    before = len(trained.runs())
    trained.run("phases=eval", *trained.SETTINGS, *fixture, "eval.alias=null", fast=False)
    ev = _by_phase(trained.runs()[before:])["eval"].data.metrics
    assert ev["test_close_mae"] == ev["test_pretrained_close_mae"]
    assert ev["test_close_mae_vs_pretrained"] == ev["test_close_mae_vs_pretrained_low"] == 0.0
    assert ev["test_backtest_sharpe"] == ev["test_pretrained_backtest_sharpe"]


def test_eval_alone_evaluates_the_registered_predictor_and_sets_the_best_alias(trained):
    before = len(trained.runs())
    trained.run("phases=eval", *trained.SETTINGS, fast=False)
    new = _by_phase(trained.runs()[before:])
    assert set(new) == {"eval"}
    assert new["eval"].data.tags["evaluated"] == "kronos-predictor v1"
    first = next(r for r in trained.runs()[:before]  # the first run's eval of this run's predictor
                 if r.data.tags.get("phase") == "eval" and r.data.tags.get("evaluated") == "kronos-predictor v1")
    assert new["eval"].data.metrics["val_close_mae"] == pytest.approx(first.data.metrics["val_close_mae"], rel=1e-6)
    client = trained.client()
    assert str(client.get_model_version_by_alias("kronos-predictor", "best").version) == "1"
    scores = {k: v for k, v in client.get_model_version("kronos-predictor", "1").tags.items()
              if k.startswith("eval_val_close_mae.")}  # the validation score ranks the versions
    assert len(scores) == 1 and float(next(iter(scores.values()))) == pytest.approx(first.data.metrics["val_close_mae"])


def test_registered_predictor_is_a_pyfunc_model_with_its_tokenizer(trained_store):
    import mlflow

    mlflow.set_tracking_uri(trained_store.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    params = {p.name for p in model.metadata.signature.params}
    assert {"pred_len", "T", "top_p", "top_k", "sample_count", "freq", "seed"} <= params
    history = _history()
    out = model.predict(history, params={"pred_len": 4, "seed": 0})
    assert list(out.columns) == ["timestamps", "open", "high", "low", "close", "volume", "amount"]
    step = pd.Timedelta(minutes=5)
    assert list(out.timestamps) == [history.timestamps.iloc[-1] + step * (k + 1) for k in range(4)]
    assert out.drop(columns="timestamps").notna().all().all()
    again = model.predict(history, params={"pred_len": 4, "seed": 0})
    pd.testing.assert_frame_equal(out, again)  # a seed makes a request reproducible
    # The registered digest covers every file of the version, the pyfunc package included.
    version = trained_store.client().get_model_version("kronos-predictor", "1")
    stored = Path(urlparse(version.source).path)
    assert {"MLmodel", "artifacts/tokenizer/model.safetensors"} <= set(version_files(stored))
    assert json.loads(version.tags["files_sha256"]) == version_files(stored)
    assert not list(stored.rglob("*.pkl")) and not list(stored.rglob("*.py"))  # data only: the code is installed


def test_eval_with_nothing_to_evaluate_says_what_to_do(pipeline):
    proc = pipeline.run("phases=eval", *SMALL, fast=False, check=False)
    assert proc.returncode == 1
    assert "eval: no predictor to evaluate" in proc.stderr and "phases=all" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {r.info.status for r in pipeline.runs()} == {"FAILED"}
