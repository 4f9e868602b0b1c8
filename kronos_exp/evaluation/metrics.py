"""Forecast metrics: pure numpy functions of forecasts and actuals, in price units.

Shapes: ``actual`` and ``point`` are closes [W, H] (W forecast windows, H horizon steps), ``last`` is
the last observed close before each window's horizon [W], ``paths`` are sampled closes [W, S, H].
Every metric comes per horizon step ([H]) and overall (a float). IC and RankIC are correlations of
forecast and actual returns at one horizon step: on a panel across the series at each date,
averaged over the dates (cross-sectional, as the Kronos paper reports them); on one series across
its windows (a time-series correlation). Their overall value is the mean over steps. Undefined
values (a correlation with a constant, a MAPE whose actuals are all 0, a direction accuracy where
nothing moved) are NaN, never an error.
"""
from __future__ import annotations

import numpy as np

from ..metric_names import (ACTUAL_FACTS, BAND, CORRELATION_METRICS, COVERAGE, COVERAGE_ERROR, ERROR_METRICS,
                            NOMINAL_COVERAGE, POINT_METRICS, SAMPLE_METRICS, SCORE_METRICS)

def mae(point: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Mean absolute error per step [H]."""
    return np.abs(point - actual).mean(axis=0)


def rmse(point: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Root mean squared error per step [H]."""
    return np.sqrt(((point - actual) ** 2).mean(axis=0))


def _masked_mean(values: np.ndarray, keep: np.ndarray, axis: int | None) -> np.ndarray:
    """Mean of ``values`` where ``keep`` is true, down ``axis`` (None: all cells); NaN where none is kept."""
    count = keep.sum(axis=axis)
    total = np.where(keep, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mape(point: np.ndarray, actual: np.ndarray, axis: int | None = 0) -> np.ndarray:
    """Mean absolute percentage error in percent, per step [H] (``axis=None``: over all cells).
    Actuals equal to 0 have no percentage error and are skipped (``mape_skipped`` counts them);
    NaN where every actual is 0."""
    nonzero = actual != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.abs(point - actual) / np.abs(actual)
    return 100.0 * _masked_mean(ratio, nonzero, axis)


def mape_skipped(actual: np.ndarray) -> np.ndarray:
    """How many actuals MAPE skips (those equal to 0), per step [H]."""
    return (actual == 0).sum(axis=0).astype(np.float64)


def flat_share(actual: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Share of windows whose actual equals the last observed close (no move to call), per step [H]."""
    return (actual == last[:, None]).mean(axis=0)


def direction_accuracy(point: np.ndarray, actual: np.ndarray, last: np.ndarray,
                       axis: int | None = 0) -> np.ndarray:
    """Share of actual moves (actual != ``last``) that the forecast calls the right way (up or down
    from ``last``), per step [H] (``axis=None``: over all cells). Flat actuals are left out
    (``flat_share`` reports them), so a forecast that never moves scores 0; NaN where nothing moved."""
    ref = last[:, None]
    right = np.sign(point - ref) == np.sign(actual - ref)
    return _masked_mean(right, actual != ref, axis)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation down the window axis of [W, H] arrays -> [H]; NaN where either is constant."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a ** 2).sum(axis=0) * (b ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=0) / np.where(denom > 0, denom, 1.0), np.nan)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks down axis 0 (1 = smallest), ties sharing their average rank."""
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[1]):
        col = x[:, j]
        order = np.argsort(col, kind="stable")
        sorted_col = col[order]
        ranks = np.empty(len(col))
        start = 0
        while start < len(col):
            end = start
            while end + 1 < len(col) and sorted_col[end + 1] == sorted_col[start]:
                end += 1
            ranks[start:end + 1] = (start + end) / 2 + 1
            start = end + 1
        out[order, j] = ranks
    return out


def ic(point: np.ndarray, actual: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Information coefficient per step [H]: Pearson correlation across windows of the forecast
    return (point / last - 1) and the actual return (actual / last - 1)."""
    ref = last[:, None]
    return _pearson(point / ref - 1, actual / ref - 1)


def rank_ic(point: np.ndarray, actual: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Spearman correlation across windows of forecast and actual returns, per step [H]."""
    ref = last[:, None]
    return _pearson(_ranks(point / ref - 1), _ranks(actual / ref - 1))


MIN_CROSS_SECTION = 3  # a correlation across fewer series at a date is ±1 or undefined, never evidence


def by_date(name: str, point: np.ndarray, actual: np.ndarray, last: np.ndarray,
            dates: list[np.ndarray]) -> np.ndarray:
    """[D, H] IC or RankIC across the series at each date (``dates``: each date's window indices), per
    step; NaN at a date with fewer than MIN_CROSS_SECTION series. The Kronos paper's IC on a panel:
    cross-sectional, then averaged over dates."""
    fn = ic if name == "ic" else rank_ic
    return np.array([fn(point[g], actual[g], last[g]) if len(g) >= MIN_CROSS_SECTION
                     else np.full(point.shape[1], np.nan) for g in dates]).reshape(len(dates), point.shape[1])


def _correlation_by_step(name: str, point: np.ndarray, actual: np.ndarray, last: np.ndarray,
                         dates: list[np.ndarray] | None) -> np.ndarray:
    """[H] a correlation metric per step: across the series of each date, averaged over the dates, on
    a panel (``dates``); across the windows of one series otherwise (a time-series correlation)."""
    if dates is None:
        return (ic if name == "ic" else rank_ic)(point, actual, last)
    return defined_mean(by_date(name, point, actual, last, dates), axis=0)


def defined_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean of the finite values along ``axis``; NaN where none is (numpy's nanmean warns there)."""
    counts = np.isfinite(values).sum(axis=axis)
    return np.where(counts > 0, np.nansum(values, axis=axis) / np.maximum(counts, 1), np.nan)


def crps(paths: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score per step [H], from S sample paths [W, S, H], by the fair
    (unbiased) ensemble estimator (Ferro 2014): mean_i |x_i - y| - sum_{i != j} |x_i - x_j| / (2 S (S - 1)).
    Its expectation is the CRPS of the distribution the samples come from, whatever S, so values
    compare across ``sample_count`` (the plain 1/S^2 estimator is biased upward by E|X - X'| / 2S).
    One sample gives the MAE."""
    return crps_cells(paths, actual).mean(axis=0)


def crps_cells(paths: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The fair CRPS of each window and step [W, H] (``crps`` averages it over the windows)."""
    samples = paths.shape[1]
    spread = np.abs(paths - actual[:, None, :]).mean(axis=1)  # [W, H]
    pairwise = np.abs(paths[:, :, None, :] - paths[:, None, :, :]).sum(axis=(1, 2))  # [W, H], i == j adds 0
    return spread - pairwise / (2 * samples * max(samples - 1, 1))


def band(paths: np.ndarray, quantiles: tuple[float, float] = BAND) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper quantiles over the samples [W, S, H] -> two [W, H] arrays."""
    lo, hi = np.quantile(paths, quantiles, axis=1)
    return lo, hi


def coverage(paths: np.ndarray, actual: np.ndarray, quantiles: tuple[float, float] = BAND) -> np.ndarray:
    """Share of windows whose actual falls inside the sampled 10-90% band (ends included), per step [H]."""
    lo, hi = band(paths, quantiles)
    return ((actual >= lo) & (actual <= hi)).mean(axis=0)


def by_step(point: np.ndarray, actual: np.ndarray, last: np.ndarray, paths: np.ndarray | None = None,
            dates: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every metric per horizon step: name -> [H], with the facts about the actuals (``flat_share``,
    ``close_mape_skipped``). CRPS and coverage only with more than one sample; IC and RankIC across
    the series of each date on a panel (``dates``)."""
    out = {"close_mae": mae(point, actual), "close_rmse": rmse(point, actual), "close_mape": mape(point, actual),
           "close_mape_skipped": mape_skipped(actual), "direction_accuracy": direction_accuracy(point, actual, last),
           "flat_share": flat_share(actual, last),
           **{name: _correlation_by_step(name, point, actual, last, dates) for name in CORRELATION_METRICS}}
    if paths is not None and paths.shape[1] > 1:
        out["crps"] = crps(paths, actual)
        out[COVERAGE] = coverage(paths, actual)
        out[COVERAGE_ERROR] = np.abs(out[COVERAGE] - NOMINAL_COVERAGE)
    return out


def overall(point: np.ndarray, actual: np.ndarray, last: np.ndarray, paths: np.ndarray | None = None,
            dates: list[np.ndarray] | None = None) -> dict[str, float]:
    """Every metric over all windows and steps (``value`` of each), with the facts about the actuals.
    CRPS and coverage only with more than one sample."""
    sampled = SAMPLE_METRICS if paths is not None and paths.shape[1] > 1 else ()
    return {name: value(name, point, actual, last, paths, dates)
            for name in (*POINT_METRICS, *ACTUAL_FACTS, *sampled)}


def value(name: str, point: np.ndarray, actual: np.ndarray, last: np.ndarray,
          paths: np.ndarray | None = None, dates: list[np.ndarray] | None = None) -> float:
    """One metric over all windows and steps. RMSE, MAPE and direction accuracy pool all their cells
    (the steps may keep different numbers of them); ``close_mape_skipped`` is the total count; IC and
    RankIC are the mean of the per-step correlations (NaN if every step is undefined), each step's
    across the series of each date on a panel (``dates``)."""
    if name == "close_rmse":
        return float(np.sqrt(((point - actual) ** 2).mean()))
    if name == "close_mape":
        return float(mape(point, actual, axis=None))
    if name == "close_mape_skipped":
        return float(mape_skipped(actual).sum())
    if name == "direction_accuracy":
        return float(direction_accuracy(point, actual, last, axis=None))
    if name in CORRELATION_METRICS:
        return float(defined_mean(_correlation_by_step(name, point, actual, last, dates), axis=0))
    if name == COVERAGE_ERROR:
        return abs(value(COVERAGE, point, actual, last, paths) - NOMINAL_COVERAGE)
    means = {"close_mae": lambda: mae(point, actual), "flat_share": lambda: flat_share(actual, last),
             "crps": lambda: crps(paths, actual), COVERAGE: lambda: coverage(paths, actual)}
    return float(means[name]().mean())


def skill(metrics: dict[str, float], last_value: dict[str, float],
          drift: dict[str, float] | None = None) -> dict[str, float]:
    """Each metric relative to a baseline's. ``<m>_skill`` = 1 - m / the last value's m for error
    metrics (the last value has no samples: its CRPS is its MAE). ``<m>_excess`` = m - drift's m for
    scores, only when ``drift`` is given: the last value never moves, so it has no direction to
    compare with. Correlations get neither (a constant return forecast has none)."""
    out = {}
    for name in ERROR_METRICS:
        if name not in metrics:
            continue
        ref = last_value.get(name, last_value["close_mae"] if name == "crps" else np.nan)
        out[f"{name}_skill"] = float(1 - metrics[name] / ref) if ref > 0 else float("nan")
    for name in SCORE_METRICS if drift is not None else ():
        out[f"{name}_excess"] = float(metrics[name] - drift[name])
    return out


def last_value_forecast(last: np.ndarray, horizon: int) -> np.ndarray:
    """Random walk: every future close equals the last observed one [W] -> [W, H]."""
    return np.repeat(last[:, None], horizon, axis=1).astype(np.float64)


def drift_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """The straight line through the first and last close of each history [W, L], extended H steps
    (the average step of the lookback, repeated) -> [W, H]."""
    history = np.asarray(history, dtype=np.float64)
    step = (history[:, -1] - history[:, 0]) / max(history.shape[1] - 1, 1)
    return history[:, -1:] + step[:, None] * np.arange(1, horizon + 1)[None, :]

