"""Which windows of a split become forecast origins (any window of the split, whether or not
``data.max_eval_windows`` kept it for the validation loss).

Origins whose horizons overlap share their actuals, so their errors are not separate pieces of
evidence; by default one series' origins are spaced at least a horizon apart (as many as fit, at
most ``eval.windows``), and the series take equal shares so that panels stay aligned in time (the
backtest trades the series against each other at each origin). Overlapping origins, evenly spaced
over every window, come only when asked.
"""
from __future__ import annotations

import numpy as np


def _even(n: int, k: int) -> np.ndarray:
    """k positions spread evenly over range(n), the first included."""
    return (np.arange(min(k, n), dtype=np.int64) * n) // max(min(k, n), 1)


def non_overlapping(starts: np.ndarray, spacing: int) -> np.ndarray:
    """Positions in ``starts`` (one series' window starts, ascending) kept by walking forward and
    taking each start at least ``spacing`` rows after the last one taken: the most origins that fit."""
    kept, next_free = [], None
    for pos, start in enumerate(starts):
        if next_free is None or start >= next_free:
            kept.append(pos)
            next_free = start + spacing
    return np.asarray(kept, dtype=np.int64)


def choose_origins(starts: list[np.ndarray], limit: int, horizon: int, overlap: bool) -> np.ndarray:
    """[O, 2] (series, start) of at most ``limit`` origins, given each series' window starts
    (ascending), in series then time order. Series of equal length get the same starts."""
    if overlap:
        every = np.array([(k, s) for k, own in enumerate(starts) for s in own], dtype=np.int64).reshape(-1, 2)
        return every[_even(len(every), limit)]
    candidates = [own[non_overlapping(own, horizon)] for own in starts]
    series = [k for k, c in enumerate(candidates) if len(c)]
    if limit < len(series):  # fewer origins than series: one origin, mid-split, from evenly chosen series
        chosen = [(series[i], candidates[series[i]][len(candidates[series[i]]) // 2]) for i in _even(len(series), limit)]
    else:
        share = limit // max(len(series), 1)
        chosen = [(k, s) for k in series for s in candidates[k][_even(len(candidates[k]), share)]]
    return np.asarray(chosen, dtype=np.int64).reshape(-1, 2)
