"""Intervals for statistics of forecast origins, and the verdict a reader takes from them.

Forecast origins of one series are serially dependent (neighbouring windows share market regimes,
and overlapping horizons share actuals), so resampling single origins would understate the spread.
The moving-block bootstrap resamples runs of ``block`` consecutive origins instead (Kuensch 1989)
and reads a percentile interval off the resampled statistic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

METHOD = "moving-block bootstrap over origins, percentile interval"
RESAMPLES = 2000
LEVEL = 0.95

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"


@dataclass(frozen=True)
class Interval:
    """A statistic's value on the origins as they are, and its bootstrap interval."""
    estimate: float
    low: float
    high: float
    level: float
    block: int
    resamples: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def block_length(n: int) -> int:
    """n^(1/3) origins, the usual rate for a block bootstrap of a mean, at least 1."""
    return max(1, math.ceil(n ** (1 / 3)))


def resample_indices(n: int, block: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n] origin indices: each row strings together random blocks of ``block``
    consecutive origins (starts uniform over the n - block + 1 possible) and cuts to n."""
    block = min(block, n)
    blocks = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(resamples, blocks))
    return (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n]


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, *, level: float = LEVEL,
              resamples: int = RESAMPLES, block: int | None = None, seed: int = 0) -> Interval:
    """The interval of ``statistic(indices)`` over n origins in their time order. ``statistic`` gets an
    index array into the origins and returns a number; resamples where it is undefined (NaN) are left
    out. Seeded, so the same origins always give the same interval."""
    if n < 1:
        raise ValueError("bootstrap needs at least one origin")
    block = block or block_length(n)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(idx) for idx in resample_indices(n, block, resamples, rng)], dtype=np.float64)
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail]) if values.size else (math.nan, math.nan)
    return Interval(float(statistic(np.arange(n))), float(low), float(high), level, block, resamples)


def verdict(difference: Interval, lower_is_better: bool) -> str:
    """``better`` when the whole interval of (model - reference) lies on the good side of 0,
    ``worse`` when it lies on the bad side, else ``no significant difference``."""
    if not (math.isfinite(difference.low) and math.isfinite(difference.high)):
        return NO_DIFFERENCE
    if difference.high < 0 or difference.low > 0:
        below = difference.high < 0
        return BETTER if below == lower_is_better else WORSE
    return NO_DIFFERENCE
