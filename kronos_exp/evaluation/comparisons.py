"""The model against each other forecaster on the test split: per-date losses and their verdict.

Each origin's loss in ``eval.metric`` (its mean over the horizon: absolute error, squared error for
RMSE, percentage error, CRPS, the share of moves called right), averaged over the series forecast
at the same date; on a panel IC and RankIC are per date already (across the series). The
differences go to the Diebold–Mariano test (evaluation.verdicts). A metric that needs sample paths
is compared only with forecasters that have them; the point forecasters (last value, drift) are
compared with the model on ``close_mae`` instead. A band's coverage, one share over every cell, has
no per-date loss and gets no test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..metric_names import CORRELATION_METRICS, SAMPLE_METRICS, UNTESTED, maximised
from . import metrics as M
from .verdicts import Verdict, diebold_mariano

POINT_FALLBACK = "close_mae"  # what a forecaster without sample paths is compared on


@dataclass(frozen=True)
class Forecasts:
    """One forecaster's forecasts at the origins: point [W, H] and sampled paths [W, S, H] when it samples."""
    point: np.ndarray
    paths: np.ndarray | None = None

    @property
    def sampled(self) -> bool:
        return self.paths is not None and self.paths.shape[1] > 1


@dataclass(frozen=True)
class Dates:
    """Which origin date each origin [W] forecasts from (its last observed bar), and the horizon
    steps neighbouring origins of one series share (the Newey–West lag)."""
    of_origin: np.ndarray
    lag: int

    @property
    def grouped(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct dates in time order, and each origin's position among them."""
        return np.unique(self.of_origin, return_inverse=True)

    @property
    def cross_sections(self) -> list[np.ndarray] | None:
        """Each date's origins (indices), in time order, on a panel (a date with several series);
        None for one series, whose correlations run over time."""
        keys, group = self.grouped
        if len(keys) == len(group):
            return None
        return [np.flatnonzero(group == g) for g in range(len(keys))]


@dataclass(frozen=True)
class Comparison:
    reference: str
    metric: str  # eval.metric, or close_mae against a forecaster without sample paths
    difference: Verdict  # the model's per-date loss minus the reference's, tested

    @property
    def verdict(self) -> str:
        return self.difference.verdict


def compared_on(metric: str, sampled: bool) -> str:
    """The metric a reference is compared on: ``metric``, or POINT_FALLBACK where it needs sample
    paths the reference (``sampled``: whether it has them) lacks."""
    return POINT_FALLBACK if metric in SAMPLE_METRICS and not sampled else metric


def per_origin(metric: str, f: Forecasts, actual: np.ndarray, last: np.ndarray) -> np.ndarray | None:
    """[W] each origin's loss (or score) in ``metric``, averaged over its horizon; None when the
    metric has no per-origin value (a coverage, a correlation)."""
    error = f.point - actual
    if metric == "close_mae":
        return np.abs(error).mean(axis=1)
    if metric == "close_rmse":
        return (error ** 2).mean(axis=1)
    if metric == "close_mape":
        return M.mape(f.point, actual, axis=1)
    if metric == "direction_accuracy":
        return M.direction_accuracy(f.point, actual, last, axis=1)
    if metric == "crps":
        return M.crps_cells(f.paths, actual).mean(axis=1)
    return None


def per_date(metric: str, f: Forecasts, actual: np.ndarray, last: np.ndarray, dates: Dates) -> np.ndarray | None:
    """[D] the metric at each origin date: the series' per-origin losses averaged, or (IC, RankIC)
    the correlation across the series at that date; None when there is none."""
    keys, group = dates.grouped
    if metric in CORRELATION_METRICS:
        sections = dates.cross_sections
        if sections is None:  # one series: a correlation over time, no value per date
            return None
        return M.defined_mean(M.by_date(metric, f.point, actual, last, sections), axis=1)
    losses = per_origin(metric, f, actual, last)
    if losses is None:
        return None
    with np.errstate(invalid="ignore"):
        total = np.bincount(group, weights=np.nan_to_num(losses), minlength=len(keys))
        count = np.bincount(group, weights=np.isfinite(losses).astype(np.float64), minlength=len(keys))
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def compare(metric: str, model: Forecasts, references: dict[str, Forecasts], actual: np.ndarray,
            last: np.ndarray, dates: Dates) -> list[Comparison]:
    """The model against each reference: the per-date differential's mean, interval and verdict."""
    out = []
    for name, reference in references.items():
        on = compared_on(metric, reference.sampled)
        mine, theirs = (per_date(on, f, actual, last, dates) for f in (model, reference))
        if mine is None or theirs is None:
            out.append(Comparison(name, on, Verdict(math.nan, math.nan, math.nan, math.nan, 0, dates.lag, UNTESTED)))
            continue
        result = diebold_mariano(mine - theirs, dates.lag, lower_is_better=maximised(on) is not True)
        out.append(Comparison(name, on, result))
    return out
