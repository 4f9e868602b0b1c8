"""The picture of a forecast: a fan chart (history, sampled paths' mean and band, actuals), drawn
by the forecast command and by the eval step's charts (kronos_exp.evaluation.plots). The line is
the mean of the paths: the point forecast the evaluation scores, the forecast CSV writes and the
served model returns, so the picture shows the numbers.

Figures are made without pyplot (no global state, nothing to close, PNGs through Agg), and
matplotlib is imported by the first figure drawn: a run that draws none does not pay its import.
"""
from __future__ import annotations

import numpy as np

from ..metric_names import BAND

BAND_LABEL = f"{100 * BAND[0]:.0f}-{100 * BAND[1]:.0f}% band"
PRETRAINED_LABEL = "pretrained"  # the fan chart's legend: "pretrained mean forecast", "pretrained 10-90% band"


def figure(**kwargs):
    """A new matplotlib Figure (``figsize`` and the rest as Figure takes them)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _fan(ax, future, paths, colour: str, name: str) -> None:
    """The sampled paths [S, H]: their band (BAND) when more than one, and their mean."""
    if paths.shape[0] > 1:
        lo, hi = np.quantile(paths, BAND, axis=0)
        ax.fill_between(future, lo, hi, color=colour, alpha=0.25, label=f"{name} {BAND_LABEL}".strip())
    ax.plot(future, paths.mean(axis=0), color=colour, lw=1.5, label=f"{name} mean forecast".strip())


def fan_chart(ax, history_close, paths, actual=None, baseline=None, title: str = "", show_history: int = 64,
              pretrained=None) -> None:
    """The last ``show_history`` closes, then the sampled paths' mean and band [S, H], the
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
