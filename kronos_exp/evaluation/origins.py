"""Which windows of a split become forecast origins.

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


def choose_origins(index: np.ndarray, limit: int, horizon: int, overlap: bool) -> np.ndarray:
    """Window positions into a split's ``index`` ([M, 2] rows of (series, start), grouped by series in
    ascending start order): at most ``limit`` of them, in series then time order."""
    if overlap or len(index) == 0:
        return _even(len(index), limit)
    series = list(dict.fromkeys(index[:, 0].tolist()))
    candidates = []
    for k in series:
        rows = np.flatnonzero(index[:, 0] == k)
        candidates.append(rows[non_overlapping(index[rows, 1], horizon)])
    if limit < len(series):  # fewer origins than series: one origin, mid-split, from evenly chosen series
        return np.asarray([candidates[i][len(candidates[i]) // 2] for i in _even(len(series), limit)], np.int64)
    share = limit // len(series)
    return np.concatenate([c[_even(len(c), share)] for c in candidates])
