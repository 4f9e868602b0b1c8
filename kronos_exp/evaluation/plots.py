"""Figures of an evaluation, returned (matplotlib Figures, no pyplot) for whoever records them,
under the artifact names they are logged by: fan charts of test windows, metrics by horizon step
and the backtest's equity curves."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metric_names import BAND
from ..forecasting.plots import fan_chart, figure
from ..schemas import EvalConfig
from .report import CLOSE, MODEL, PRETRAINED, TEST, Evaluation, fan_chart_windows

METRICS_BY_HORIZON = "plots/metrics_by_horizon.png"
BACKTEST_EQUITY = "plots/backtest_equity.png"


def fan_name(series: str) -> str:
    """plots/fan_<series>.png, the series name made safe for a file name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in series)
    return f"plots/fan_{safe}.png"


def fan_charts(positions, stamps, closes, lookback: int, pred_len: int, paths, baseline, names,
               label: str, pretrained_paths=None) -> dict:
    """One fan chart per chosen window, by artifact name; with ``pretrained_paths`` (shaped as
    ``paths``) the pretrained weights' forecast beside the fine-tuned one."""
    out = {}
    for pos in positions:
        fig = figure(figsize=(8, 3.5))
        ax = fig.subplots()
        origin = pd.Timestamp(stamps[pos][lookback])
        fan_chart(ax, closes[pos, :lookback], paths[pos], closes[pos, lookback:lookback + pred_len], baseline[pos],
                  f"{names[pos]}: {label}, test window forecast from {origin}", show_history=4 * pred_len,
                  pretrained=None if pretrained_paths is None else pretrained_paths[pos])
        fig.tight_layout()
        out[fan_name(names[pos])] = fig
    return out


def metrics_by_horizon(steps: dict[str, np.ndarray], forecasters: list[str]):
    """MAE, direction accuracy, IC and (when sampled) band coverage against the horizon step,
    one line per forecaster."""
    panels = [m for m in ("close_mae", "direction_accuracy", "ic", "coverage_10_90") if m in steps]
    fig = figure(figsize=(4 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    for ax, metric in zip(np.atleast_1d(axes), panels):
        for name in forecasters:
            key = metric if name == MODEL else f"{name}_{metric}"
            if key in steps:
                ax.plot(range(1, len(steps[key]) + 1), steps[key], marker=".", label=name)
        if metric == "coverage_10_90":
            ax.axhline(BAND[1] - BAND[0], color="gray", ls=":", lw=1)  # what a calibrated band covers
        ax.set(title=metric, xlabel="horizon step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def equity_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str):
    """The value of 1 invested, against time, one line per strategy (name -> (timestamps, equity), as
    evaluation.backtest.BacktestResult's times and equity)."""
    fig = figure(figsize=(8, 3.5))
    ax = fig.subplots()
    for name, (times, equity) in curves.items():
        ax.plot(pd.to_datetime(times), equity, drawstyle="steps-post", lw=1.2, label=name)
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set(title=title, xlabel="time", ylabel="equity (start = 1)")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def figures(result: Evaluation, settings: EvalConfig) -> dict:
    """Every figure of an evaluation, by artifact name: the fan charts of up to ``eval.plot_series``
    series, metrics by horizon (test split) and the test backtest's equity curves."""
    test, forecasts = result.test, result.forecasts
    out = fan_charts(fan_chart_windows(test, settings.plot_series), test.stamps, test.raws[..., CLOSE],
                     test.lookback, test.pred_len, forecasts[MODEL].paths, forecasts["last_value"].point,
                     test.names, result.label,
                     pretrained_paths=forecasts[PRETRAINED].paths if PRETRAINED in forecasts else None)
    out[METRICS_BY_HORIZON] = metrics_by_horizon(result.steps_by_split[TEST], list(forecasts))
    title = f"{result.label}: test backtest, k={settings.backtest_k}, {settings.backtest_cost_bps:g} bp per turnover"
    out[BACKTEST_EQUITY] = equity_curves({name: (r.times, r.equity) for name, r in result.trades.items()}, title)
    return out
