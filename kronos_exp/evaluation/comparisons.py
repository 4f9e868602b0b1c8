"""Is the evaluated model better than another forecaster, beyond the noise of the origins?

The difference in the headline metric (model minus reference, on the same origins and the same
random draws) gets a moving-block bootstrap interval over origins (evaluation.intervals), and a
verdict from which side of 0 the interval lies on. A band's coverage is compared by its distance
from the nominal 80%, so that "better" means "closer to calibrated".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metric_names import maximised, ranking_value
from . import metrics as M
from .intervals import Interval, bootstrap, verdict


@dataclass(frozen=True)
class Forecasts:
    """One forecaster's forecasts at the origins: point [W, H] and sampled paths [W, S, H] when it samples."""
    point: np.ndarray
    paths: np.ndarray | None = None

    def value(self, metric: str, idx: np.ndarray, actual: np.ndarray, last: np.ndarray) -> float:
        """``metric`` over the origins ``idx`` (repeats allowed), as comparisons rank it."""
        paths = None if self.paths is None else self.paths[idx]
        value = M.value(metric, self.point[idx], actual[idx], last[idx], paths)
        return ranking_value(metric, value) if maximised(metric) is None else value


@dataclass(frozen=True)
class Comparison:
    reference: str
    difference: Interval  # the model's metric minus the reference's (coverage: distances from 0.8)
    verdict: str


def compare(metric: str, model: Forecasts, references: dict[str, Forecasts], actual: np.ndarray,
            last: np.ndarray, seed: int = 0) -> list[Comparison]:
    """The model against each reference on ``metric``: the difference's interval and the verdict."""
    lower_is_better = maximised(metric) is not True
    out = []
    for name, reference in references.items():
        def difference(idx: np.ndarray, reference=reference) -> float:
            return model.value(metric, idx, actual, last) - reference.value(metric, idx, actual, last)

        interval = bootstrap(difference, len(actual), seed=seed)
        out.append(Comparison(name, interval, verdict(interval, lower_is_better)))
    return out
