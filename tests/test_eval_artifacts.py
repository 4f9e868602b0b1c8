"""Every metric the eval run logs recomputes from its artifacts alone (forecasts.csv and
sample_paths.npz): scores, skills, by-step curves, verdicts and backtests, on both splits."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from kronos_exp.evaluation import backtest as B
from kronos_exp.evaluation.comparisons import Dates, Forecasts, compare
from kronos_exp.evaluation.report import backtest_metrics, differences, metric_name, score


@dataclass
class _Split:
    """One split's origins as the artifacts give them (what report.score reads)."""
    actual: np.ndarray
    last: np.ndarray
    dates: Dates


def _arrays(rows: pd.DataFrame, paths: dict, split: str) -> tuple[_Split, dict[str, Forecasts], B.Origins, int]:
    rows = rows[rows.split == split].sort_values(["origin", "step"])
    origins = rows.origin.nunique()
    steps = rows.step.max()
    first = rows[rows.forecaster == "model"]
    actual = first.actual_close.to_numpy().reshape(origins, steps)
    last = first.groupby("origin").last_close.first().to_numpy()
    origin_dates = first.groupby("origin").origin_date.first().to_numpy().astype("datetime64[ns]")
    forecasts = {}
    for name, mine in rows.groupby("forecaster", sort=False):
        sampled = paths.get(f"{split}_{name}")
        point = sampled.mean(axis=1) if sampled is not None else mine.close.to_numpy().reshape(origins, steps)
        forecasts[name] = Forecasts(point, sampled)
    ends = first.groupby("origin").timestamp.last().to_numpy().astype("datetime64[ns]")
    trades = B.Origins(first.groupby("origin").series.first().to_numpy(), origin_dates, ends, last, actual[:, -1])
    return _Split(actual, last, Dates(origin_dates, 0)), forecasts, trades, steps


def test_every_logged_eval_metric_recomputes_from_the_runs_artifacts(trained_store, tmp_path):
    client = trained_store.client()
    run = next(r for r in trained_store.runs() if r.data.tags.get("phase") == "eval")
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "forecasts.csv", str(tmp_path)),
                        parse_dates=["timestamp", "origin_date"])
    with np.load(client.download_artifacts(run.info.run_id, "sample_paths.npz", str(tmp_path)),
                 allow_pickle=False) as npz:
        paths = dict(npz)
    assert set(paths) == {"val_model", "test_model", "test_pretrained"} and paths["test_model"].shape[1:] == (4, 8)

    recomputed, by_step = {}, {}
    for split in ("val", "test"):
        origins, forecasts, trades, steps = _arrays(table, paths, split)
        scores, per_step = score(forecasts, origins)
        recomputed.update({f"{split}_{k}": v for k, v in scores.items()})
        by_step.update({f"{split}_{k}_by_step": v for k, v in per_step.items()})
        if split == "test":
            references = {k: v for k, v in forecasts.items() if k != "model"}
            recomputed.update(differences(compare("close_mae", forecasts["model"], references, origins.actual,
                                                  origins.last, origins.dates)))
            trading = {name: B.backtest(trades, f.point[:, -1], 1, 5.0).metrics() for name, f in forecasts.items()
                       if name != "last_value"}
            trading["buy_and_hold"] = B.buy_and_hold(trades, 5.0).metrics()
            recomputed.update({f"test_{k}": v for k, v in backtest_metrics(trading).items()})

    logged = {k: v for k, v in run.data.metrics.items() if not k.endswith("_by_step")}
    finite = {k: v for k, v in recomputed.items() if math.isfinite(v)}
    assert set(finite) == set(logged)  # nothing logged that the artifacts cannot give, nothing missing
    assert {k for k in run.data.metrics if k.endswith("_by_step")} <= set(by_step)
    for name, value in finite.items():
        assert logged[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    for name, values in by_step.items():
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        expected = {h + 1: v for h, v in enumerate(values) if math.isfinite(v)}
        assert history.keys() == expected.keys(), name
        assert all(history[h] == pytest.approx(v, rel=1e-9, abs=1e-12) for h, v in expected.items()), name


def test_the_crps_and_a_panels_ic_by_hand(trained_store, tmp_path):
    """Two metrics by their textbook definitions, from the artifacts: the fair CRPS (Ferro 2014) and
    the cross-sectional IC (per date, across the series, averaged over dates and steps)."""
    client = trained_store.client()
    run = next(r for r in trained_store.runs() if r.data.tags.get("phase") == "eval")
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "forecasts.csv", str(tmp_path)))
    with np.load(client.download_artifacts(run.info.run_id, "sample_paths.npz", str(tmp_path))) as npz:
        paths = npz["test_model"]
    rows = table[(table.split == "test") & (table.forecaster == "model")].sort_values(["origin", "step"])
    actual = rows.actual_close.to_numpy().reshape(paths.shape[0], paths.shape[2])
    s = paths.shape[1]
    crps = []
    for w in range(paths.shape[0]):
        for h in range(paths.shape[2]):
            x, y = paths[w, :, h], actual[w, h]
            crps.append(np.abs(x - y).mean() - np.abs(x[:, None] - x[None, :]).sum() / (2 * s * (s - 1)))
    assert run.data.metrics["test_crps"] == pytest.approx(np.mean(crps), rel=1e-9)

    point = paths.mean(axis=1)
    last = rows.groupby("origin").last_close.first().to_numpy()
    dates = rows.groupby("origin").origin_date.first().to_numpy()
    per_date_step = []
    for date in np.unique(dates):
        at = dates == date
        for h in range(point.shape[1]):
            per_date_step.append(np.corrcoef(point[at, h] / last[at] - 1, actual[at, h] / last[at] - 1)[0, 1])
    assert run.data.metrics[metric_name("model", "test_ic")] == pytest.approx(np.nanmean(per_date_step), rel=1e-9)
