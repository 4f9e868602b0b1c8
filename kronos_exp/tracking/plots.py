"""Figures logged on phase runs: loss curves of trained phases; fan charts, metrics by horizon and backtest
equity curves of the eval phase."""
from __future__ import annotations

import functools

import mlflow
import numpy as np
import pandas as pd

from ..data.frame import BAND

BAND_LABEL = f"{100 * BAND[0]:.0f}-{100 * BAND[1]:.0f}% band"
PRETRAINED_LABEL = "pretrained"  # the fan chart's legend: "pretrained median forecast", "pretrained 10-90% band"


@functools.cache
def _figure_class():
    """matplotlib's Figure, imported by the first figure drawn: a run that draws none (reused
    phases, a forecast without --plot) does not pay its import. Figures are made without pyplot
    (no global state, nothing to close, PNGs through Agg), whose import would add about 0.4 s."""
    from matplotlib.figure import Figure

    return Figure


def figure(**kwargs):
    """A new matplotlib Figure (``figsize`` and the rest as Figure takes them)."""
    return _figure_class()(**kwargs)


def log_loss_curve(phase: str, result) -> None:
    """Train loss against optimizer step, validation loss against epoch, side by side."""
    fig = figure(figsize=(10, 3.5))
    left, right = fig.subplots(1, 2)
    if result.train_history:
        steps, losses = zip(*result.train_history)
        left.plot(steps, losses, marker=".")
    left.set(title=f"{phase}: train loss", xlabel="optimizer step", ylabel="loss")
    right.plot(range(1, len(result.val_history) + 1), result.val_history, marker="o", color="tab:orange")
    right.set(title=f"{phase}: validation loss", xlabel="epoch", ylabel="val_loss")
    fig.tight_layout()
    mlflow.log_figure(fig, f"plots/{phase}_loss_curve.png")


def _fan(ax, future, paths, colour: str, name: str) -> None:
    """The sampled paths [S, H]: their band (metrics.BAND) when more than one, and their median."""
    if paths.shape[0] > 1:
        lo, hi = np.quantile(paths, BAND, axis=0)
        ax.fill_between(future, lo, hi, color=colour, alpha=0.25, label=f"{name} {BAND_LABEL}".strip())
    ax.plot(future, np.median(paths, axis=0), color=colour, lw=1.5, label=f"{name} median forecast".strip())


def fan_chart(ax, history_close, paths, actual=None, baseline=None, title: str = "", show_history: int = 64,
              pretrained=None) -> None:
    """The last ``show_history`` closes, then the sampled paths' median and band [S, H], the
    pretrained weights' paths [S, H] beside them when given, the actual closes and a baseline when
    known. The x axis counts bars (integers) from the forecast origin, so overnight and weekend
    gaps do not stretch the picture."""
    history_close = np.asarray(history_close)[-show_history:]
    past = np.arange(-len(history_close) + 1, 1)
    future = np.arange(1, paths.shape[1] + 1)
    ax.plot(past, history_close, color="black", lw=1, label="history")
    _fan(ax, future, paths, "tab:blue", "fine-tuned" if pretrained is not None else "")
    if pretrained is not None:
        _fan(ax, future, pretrained, "tab:orange", PRETRAINED_LABEL)
    if actual is not None:
        ax.plot(future, actual, color="tab:green", lw=1.5, label="actual")
    if baseline is not None:
        ax.plot(future, baseline, color="tab:gray", ls="--", lw=1, label="last value")
    ax.axvline(0.5, color="gray", lw=0.5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="bars from the forecast origin", ylabel="close")
    ax.legend(fontsize=7, loc="upper left")


def log_fan_charts(positions, stamps, closes, lookback: int, pred_len: int, paths, baseline, names,
                   label: str, pretrained_paths=None) -> None:
    """One fan chart per chosen window: plots/fan_<series>.png on the active run; with
    ``pretrained_paths`` (shaped as ``paths``) the pretrained weights' forecast beside the fine-tuned one."""
    for pos in positions:
        fig = figure(figsize=(8, 3.5))
        ax = fig.subplots()
        origin = pd.Timestamp(stamps[pos][lookback])
        fan_chart(ax, closes[pos, :lookback], paths[pos], closes[pos, lookback:lookback + pred_len], baseline[pos],
                  f"{names[pos]}: {label}, test window forecast from {origin}", show_history=4 * pred_len,
                  pretrained=None if pretrained_paths is None else pretrained_paths[pos])
        fig.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in names[pos])
        mlflow.log_figure(fig, f"plots/fan_{safe}.png")


def log_metrics_by_horizon(steps: dict[str, np.ndarray], forecasters: list[str]) -> None:
    """MAE, direction accuracy, IC and (when sampled) band coverage against the horizon step,
    one line per forecaster: plots/metrics_by_horizon.png on the active run."""
    panels = [m for m in ("close_mae", "direction_accuracy", "ic", "coverage_10_90") if m in steps]
    fig = figure(figsize=(4 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    for ax, metric in zip(np.atleast_1d(axes), panels):
        for name in forecasters:
            key = metric if name == "model" else f"{name}_{metric}"
            if key in steps:
                ax.plot(range(1, len(steps[key]) + 1), steps[key], marker=".", label=name)
        if metric == "coverage_10_90":
            ax.axhline(BAND[1] - BAND[0], color="gray", ls=":", lw=1)  # what a calibrated band covers
        ax.set(title=metric, xlabel="horizon step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/metrics_by_horizon.png")


def log_equity_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """The value of 1 invested, against time, one line per strategy (name -> (timestamps, equity), as
    evaluation.backtest.BacktestResult's times and equity): plots/backtest_equity.png on the active run."""
    fig = figure(figsize=(8, 3.5))
    ax = fig.subplots()
    for name, (times, equity) in curves.items():
        ax.plot(pd.to_datetime(times), equity, drawstyle="steps-post", lw=1.2, label=name)
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set(title=title, xlabel="time", ylabel="equity (start = 1)")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/backtest_equity.png")
