"""Which windows of a split become forecast origins (any window of the split, whether or not
``data.max_eval_windows`` kept it for the validation loss).

An origin is a *date* (the last observed bar of a window): on a panel every series that has a
window ending its history at that date is forecast from it, so a date's forecasts form one
cross-section (the unit the verdicts test and the backtest trades) and no series is compared with
another's future. Any window of the split may be an origin (every row, not only every
``data.stride``-th, so that series with missing bars still meet on dates). The dates are those
every series of the split has when they give as many as wanted; else any series' dates (series on
different session hours, a series that starts late), where a series joins the dates it has.
``eval.windows`` bounds the origins: ``eval.windows // series`` dates (at least one).

Origins whose horizons overlap share their actuals, so by default a date is taken only once it is
a horizon past the previous origin of every series that has it (as many as fit, then evenly
thinned). With ``eval.overlap`` the dates are spread evenly over every date; the verdicts then
widen their variance by the horizon steps neighbours share (``lag``).
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
    members = _members(origin_dates)
    coverage = np.array([len(m) for m in members])
    wanted = max(1, limit // series)
    for shared in (np.flatnonzero(coverage == series), np.arange(len(members))):  # every series', if enough
        candidates = shared if overlap else _walk(shared, members, len(origin_dates), horizon)
        if len(candidates) >= wanted:
            break
    taken = _walk(candidates[_even(len(candidates), wanted)], members, len(origin_dates), 0 if overlap else horizon)
    chosen = np.concatenate([members[i] for i in taken])
    return chosen, shared_steps(chosen.tolist(), horizon)


def _members(origin_dates: list[np.ndarray]) -> list[np.ndarray]:
    """For each distinct date, ascending, the [m, 2] (series, row) of the windows forecast from it,
    in series order: one sort of every window, not a search of every series at every date."""
    series = np.concatenate([np.full(len(d), k, dtype=np.int64) for k, d in enumerate(origin_dates)])
    rows = np.concatenate([np.arange(len(d), dtype=np.int64) for d in origin_dates])
    stamps = np.concatenate(origin_dates)
    order = np.lexsort((series, stamps))
    _, first = np.unique(stamps[order], return_index=True)
    return np.split(np.stack([series[order], rows[order]], axis=1), first[1:])


def _walk(dates: np.ndarray, members: list[np.ndarray], n_series: int, spacing: int) -> np.ndarray:
    """The dates (indices into ``members``) kept walking forward: a date is taken once it is at least
    ``spacing`` rows past the previous origin of each series it has (its own rows: a series with
    missing bars rejoins at the next date the others take)."""
    previous = np.full(n_series, np.iinfo(np.int64).min // 2)
    kept = []
    for i in dates:
        k, rows = members[i][:, 0], members[i][:, 1]
        if np.all(rows >= previous[k] + spacing):
            previous[k] = rows
            kept.append(i)
    return np.asarray(kept, dtype=np.int64)


def shared_steps(chosen: list[tuple[int, int]], horizon: int) -> int:
    """The most horizon steps two consecutive origins of one series share: ceil(h / gap) - 1 for the
    smallest gap (in rows) between them, the Newey–West lag of their errors."""
    by_series: dict[int, list[int]] = {}
    for k, start in chosen:
        by_series.setdefault(k, []).append(start)
    gaps = [b - a for own in by_series.values() for a, b in zip(sorted(own), sorted(own)[1:])]
    return max(0, math.ceil(horizon / min(gaps)) - 1) if gaps else 0
