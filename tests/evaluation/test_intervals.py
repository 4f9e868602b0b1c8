"""The moving-block bootstrap: right coverage on independent origins, wider on dependent ones,
repeatable, and verdicts that follow the interval's side of 0."""
import numpy as np
import pytest

from kronos_exp.evaluation.intervals import (BETTER, NO_DIFFERENCE, WORSE, Interval, bootstrap, resample_indices,
                                             verdict)


def test_resampled_indices_are_runs_of_consecutive_origins():
    idx = resample_indices(10, 3, 50, np.random.default_rng(0))
    assert idx.shape == (50, 10) and idx.min() >= 0 and idx.max() <= 9
    for row in idx:
        for start in range(0, 9, 3):  # within a block the origins follow each other
            run = row[start:start + 3]
            assert np.all(np.diff(run) == 1)


def test_a_95_interval_of_a_mean_covers_the_truth_about_95_times_in_100():
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        x = rng.normal(0.0, 1.0, 64)
        hits += bootstrap(lambda i: x[i].mean(), len(x), resamples=400, seed=trial).contains(0.0)
    assert 0.88 <= hits / 200 <= 0.99


def test_blocks_widen_the_interval_of_a_serially_dependent_series():
    rng = np.random.default_rng(2)
    x = np.zeros(300)
    for t in range(1, 300):  # AR(1) with coefficient 0.9: neighbours move together
        x[t] = 0.9 * x[t - 1] + rng.normal()
    single = bootstrap(lambda i: x[i].mean(), len(x), block=1)
    blocks = bootstrap(lambda i: x[i].mean(), len(x), block=20)
    assert blocks.high - blocks.low > 1.5 * (single.high - single.low)


def test_the_same_origins_give_the_same_interval():
    x = np.random.default_rng(3).normal(size=40)
    assert bootstrap(lambda i: x[i].mean(), 40) == bootstrap(lambda i: x[i].mean(), 40)


@pytest.mark.parametrize("low, high, lower_is_better, expected", [
    (-2.0, -1.0, True, BETTER), (1.0, 2.0, True, WORSE), (-1.0, 1.0, True, NO_DIFFERENCE),
    (1.0, 2.0, False, BETTER), (-2.0, -1.0, False, WORSE), (float("nan"), 1.0, True, NO_DIFFERENCE)])
def test_verdicts_follow_the_side_of_zero(low, high, lower_is_better, expected):
    assert verdict(Interval(0.0, low, high, 0.95, 1, 10), lower_is_better) == expected
