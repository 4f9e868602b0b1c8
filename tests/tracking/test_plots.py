"""tracking.plots logs the figures evaluation.plots draws: the backtest's equity curves reach the run as
an artifact in a real MLflow store; the fan chart (forecasting.plots) has whole bars on the horizon axis
and the pretrained weights' forecast beside the fine-tuned one when given."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from kronos_exp.evaluation.plots import BACKTEST_EQUITY, equity_curves, fan_charts  # noqa: E402
from kronos_exp.forecasting.plots import fan_chart  # noqa: E402
from kronos_exp.tracking.plots import log_figure  # noqa: E402


def _run_in(tmp_path):
    """A run of a fresh experiment in a real SQLite store under ``tmp_path`` (artifacts there too)."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("plots", artifact_location=(tmp_path / "a").as_uri())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, mlflow.start_run(experiment_id=experiment)


def test_equity_curves_are_logged_on_the_active_run(tmp_path):
    times = np.datetime64("2024-01-01") + np.arange(4) * np.timedelta64(7, "D")
    client, started = _run_in(tmp_path)
    try:
        with started as run:
            log_figure(equity_curves({"model": (times, np.array([1.0, 1.02, 0.99, 1.05])),
                                      "buy_and_hold": (times, np.array([1.0, 1.01, 1.0, 1.01]))}, "test split"),
                       BACKTEST_EQUITY)
    finally:
        mlflow.set_tracking_uri(None)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/backtest_equity.png"]
    assert (tmp_path / "a" / run.info.run_id / "artifacts" / "plots" / "backtest_equity.png").stat().st_size > 1000


RNG = np.random.default_rng(0)
HISTORY = 10 + RNG.normal(size=5).cumsum()
PATHS, PRETRAINED = 10 + RNG.normal(size=(4, 3)), 10 + RNG.normal(size=(4, 3))  # [S, H]: the fine-tuned, the pretrained


def _draw(**pretrained):
    fig, ax = plt.subplots()
    fan_chart(ax, HISTORY, PATHS, actual=PATHS[0], baseline=np.full(3, HISTORY[-1]), show_history=2, **pretrained)
    fig.canvas.draw()
    ticks = [label.get_text().replace("\N{MINUS SIGN}", "-") for label in ax.get_xticklabels()]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    plt.close(fig)
    return ticks, legend


@pytest.mark.parametrize("pretrained", [{}, {"pretrained": PRETRAINED}])
def test_the_horizon_axis_counts_whole_bars(pretrained):
    ticks, _ = _draw(**pretrained)
    assert ticks and all(t.lstrip("-").isdigit() for t in ticks), ticks  # 5 bars wide: matplotlib would step by 0.5


def test_the_pretrained_forecast_is_drawn_beside_the_fine_tuned_one():
    _, alone = _draw()
    _, both = _draw(pretrained=PRETRAINED)
    assert alone == ["history", "10-90% band", "mean forecast", "actual", "last value"]
    assert both == ["history", "fine-tuned 10-90% band", "fine-tuned mean forecast", "pretrained 10-90% band",
                    "pretrained mean forecast", "actual", "last value"]


def test_fan_charts_pass_each_windows_pretrained_paths(tmp_path):
    stamps = [pd.date_range("2024-01-01", periods=8, freq="D")]
    closes = np.concatenate([HISTORY, PATHS[0]])[None]
    client, started = _run_in(tmp_path)
    try:
        with started as run:
            charts = fan_charts([0], stamps, closes, 5, 3, PATHS[None], np.full((1, 3), HISTORY[-1]), ["ACME"], "v1",
                                pretrained_paths=PRETRAINED[None])
            for name, fig in charts.items():
                log_figure(fig, name)
    finally:
        mlflow.set_tracking_uri(None)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/fan_ACME.png"]
