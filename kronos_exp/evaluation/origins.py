"""Which windows of a split become forecast origins (any window of the split, whether or not
``data.max_eval_windows`` kept it for the validation loss).

An origin is a *date* (the last observed bar of a window): on a panel every series that has a
window ending its history at that date is forecast from it, so a date's forecasts form one
cross-section (the unit the verdicts test and the backtest trades) and no series is compared with
another's future. Any window of the split may be an
origin (every row, not only every ``data.stride``-th, so that series with missing bars still meet
on dates). The dates are those every series of the split has
when they give as many as wanted; else any series' dates (series on different session hours, a
series that starts late), where a series joins the dates it has. ``eval.windows`` bounds the origins:
``eval.windows // series`` dates (at least one).

Origins whose horizons overlap share their actuals, so by default a date is taken only once it is
a horizon past the previous origin of every series that has it (as many as fit, then evenly
thinned). With ``eval.overlap`` the dates are spread evenly over every date; the
verdicts then widen their variance by the horizon steps neighbours share (``lag``).
"""
from __future__ import annotations

import math

import numpy as np


def _even(n: int, k: int) -> np.ndarray:
    """k positions spread evenly over range(n), the first included."""
    return (np.arange(min(k, n), dtype=np.int64) * n) // max(min(k, n), 1)


def choose_origins(origin_dates: list[np.ndarray], limit: int, horizon: int,
                   overlap: bool) -> tuple[np.ndarray, int]:
    """[O, 2] (series, start row) origins on shared dates, in date then series order, and the horizon
    steps neighbouring origins of one series share (0 when none overlap). ``origin_dates[k][p]`` is
    the date series k's window starting at row p of this split forecasts from (ascending)."""
    series = sum(1 for d in origin_dates if len(d))
    if series == 0:
        return np.empty((0, 2), dtype=np.int64), 0
    dates, coverage = np.unique(np.concatenate(origin_dates), return_counts=True)
    wanted = max(1, limit // series)
    for shared in (dates[coverage == series], dates):  # the dates every series has, if enough
        candidates = shared if overlap else np.array([d for d, _ in _walk(shared, origin_dates, horizon)],
                                                     dtype=dates.dtype)
        if len(candidates) >= wanted:
            break
    taken = candidates[_even(len(candidates), wanted)]
    chosen = [origin for _, members in _walk(taken, origin_dates, 0 if overlap else horizon) for origin in members]
    return np.asarray(chosen, dtype=np.int64).reshape(-1, 2), shared_steps(chosen, horizon)


def _walk(dates: np.ndarray, origin_dates: list[np.ndarray],
          spacing: int) -> list[tuple[np.datetime64, list[tuple[int, int]]]]:
    """Each date with the series forecast from it, walking forward: every series with a window at the
    date, once the date is at least ``spacing`` rows past each one's previous origin (its own rows:
    a series with missing bars rejoins at the next date the others take). Dates no series has, or
    that one series' last horizon still covers, are left out."""
    previous: dict[int, int] = {}
    out = []
    for date in dates:
        members = []
        for k, own in enumerate(origin_dates):
            pos = int(np.searchsorted(own, date))
            if pos < len(own) and own[pos] == date:
                members.append((k, pos))
        if members and all(k not in previous or start >= previous[k] + spacing for k, start in members):
            previous.update(members)
            out.append((date, members))
    return out


def shared_steps(chosen: list[tuple[int, int]], horizon: int) -> int:
    """The most horizon steps two consecutive origins of one series share: ceil(h / gap) - 1 for the
    smallest gap (in rows) between them, the Newey–West lag of their errors."""
    by_series: dict[int, list[int]] = {}
    for k, start in chosen:
        by_series.setdefault(k, []).append(start)
    gaps = [b - a for own in by_series.values() for a, b in zip(sorted(own), sorted(own)[1:])]
    return max(0, math.ceil(horizon / min(gaps)) - 1) if gaps else 0
