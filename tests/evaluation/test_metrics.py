"""Forecast metrics on cases small enough to compute by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kronos_exp.evaluation import metrics as m

# Two windows, two horizon steps; last observed closes 10 and 20.
LAST = np.array([10.0, 20.0])
ACTUAL = np.array([[11.0, 12.0], [19.0, 22.0]])
POINT = np.array([[12.0, 12.0], [18.0, 20.0]])


def test_errors_per_step_and_overall():
    # errors: step 0: |12-11|=1, |18-19|=1; step 1: |12-12|=0, |20-22|=2
    np.testing.assert_allclose(m.mae(POINT, ACTUAL), [1.0, 1.0])
    np.testing.assert_allclose(m.rmse(POINT, ACTUAL), [1.0, math.sqrt(2.0)])
    # percent: step 0: 1/11, 1/19; step 1: 0, 2/22
    np.testing.assert_allclose(m.mape(POINT, ACTUAL), [100 * (1 / 11 + 1 / 19) / 2, 100 * (0 + 2 / 22) / 2])
    total = m.overall(POINT, ACTUAL, LAST)
    assert total["close_mae"] == pytest.approx(1.0)
    assert total["close_rmse"] == pytest.approx(math.sqrt((1 + 1 + 0 + 4) / 4))  # pooled, not mean of steps


def test_direction_accuracy_counts_up_down_and_flat():
    # step 0: forecasts up (12 > 10) and down (18 < 20), actuals up and down -> 2 of 2
    # step 1: window 0 up, actual up -> right; window 1 flat (20 == 20), actual up (22) -> wrong
    np.testing.assert_allclose(m.direction_accuracy(POINT, ACTUAL, LAST), [1.0, 0.5])


def test_ic_and_rank_ic_correlate_returns_across_windows():
    last = np.array([10.0, 10.0, 10.0])
    actual = np.array([[11.0], [9.0], [10.5]])  # returns .1, -.1, .05
    point = np.array([[10.2], [9.9], [10.0]])  # returns .02, -.01, 0
    # Pearson of (.02, -.01, 0) and (.1, -.1, .05): centred (.01667,-.01333,-.00333) and (.01667,-.18333,.03333)
    a = np.array([0.02, -0.01, 0.0]) - 0.01 / 3
    b = np.array([0.1, -0.1, 0.05]) - 0.05 / 3
    expected = (a * b).sum() / math.sqrt((a ** 2).sum() * (b ** 2).sum())
    assert m.ic(point, actual, last)[0] == pytest.approx(expected)
    # ranks: forecast (3, 1, 2), actual (3, 1, 2) -> identical order
    assert m.rank_ic(point, actual, last)[0] == pytest.approx(1.0)
    reversed_point = np.array([[9.0], [11.0], [10.0]])
    assert m.rank_ic(reversed_point, actual, last)[0] == pytest.approx(-1.0)


def test_rank_ties_share_their_average_rank():
    np.testing.assert_allclose(m._ranks(np.array([[5.0], [1.0], [5.0], [3.0]]))[:, 0], [3.5, 1.0, 3.5, 2.0])


def test_correlation_with_a_constant_forecast_is_nan_not_an_error():
    flat = m.last_value_forecast(LAST, 2)
    assert np.isnan(m.ic(flat, ACTUAL, LAST)).all()
    assert math.isnan(m.overall(flat, ACTUAL, LAST)["ic"])


def test_crps_of_samples_by_hand():
    # one window, one step, actual 0, samples {-1, 1}: E|X-y| = 1, E|X-X'| = (0+2+2+0)/4 = 1 -> 1 - 0.5
    paths = np.array([[[-1.0], [1.0]]])
    assert m.crps(paths, np.array([[0.0]]))[0] == pytest.approx(0.5)
    # a single sample is a point forecast: CRPS = MAE
    one = POINT[:, None, :]
    np.testing.assert_allclose(m.crps(one, ACTUAL), m.mae(POINT, ACTUAL))


def test_coverage_of_the_10_90_band():
    # samples 0..10 -> 10% quantile 1, 90% quantile 9
    paths = np.arange(11.0)[None, :, None].repeat(4, axis=0)  # [4, 11, 1]
    actual = np.array([[0.5], [1.0], [5.0], [9.5]])  # outside, edge (inside), inside, outside
    lo, hi = m.band(paths)
    assert lo[0, 0] == pytest.approx(1.0) and hi[0, 0] == pytest.approx(9.0)
    assert m.coverage(paths, actual)[0] == pytest.approx(0.5)


def test_sample_metrics_only_with_several_samples():
    assert "crps" not in m.overall(POINT, ACTUAL, LAST, POINT[:, None, :])
    paths = np.stack([POINT - 1, POINT + 1], axis=1)
    assert {"crps", "coverage_10_90"} <= set(m.overall(POINT, ACTUAL, LAST, paths))


def test_skill_against_a_baseline():
    ours = {"close_mae": 1.0, "close_rmse": 2.0, "close_mape": 5.0, "direction_accuracy": 0.6, "ic": 0.1,
            "crps": 0.5}
    base = {"close_mae": 2.0, "close_rmse": 2.0, "close_mape": 4.0, "direction_accuracy": 0.5, "ic": float("nan")}
    s = m.skill(ours, base)
    assert s["close_mae_skill"] == pytest.approx(0.5)
    assert s["close_rmse_skill"] == pytest.approx(0.0)
    assert s["close_mape_skill"] == pytest.approx(-0.25)
    assert s["crps_skill"] == pytest.approx(0.75)  # against the baseline's MAE (a point forecast's CRPS)
    assert s["direction_accuracy_excess"] == pytest.approx(0.1)
    assert "ic_skill" not in s


def test_baselines():
    np.testing.assert_allclose(m.last_value_forecast(LAST, 3), [[10, 10, 10], [20, 20, 20]])
    history = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])  # slope 1 and 0
    np.testing.assert_allclose(m.drift_forecast(history, 2), [[4.0, 5.0], [5.0, 5.0]])
