"""Forecast metrics on cases small enough to compute by hand."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from kronos_exp.evaluation import metrics as m
from kronos_exp.metric_names import ACTUAL_FACTS, BAND, NOMINAL_COVERAGE, maximised, ranking_value

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


def test_direction_accuracy_counts_only_actual_moves_and_flat_share_the_rest():
    # last 10 and 20. step 0: window 0 flat (10 == 10, left out), window 1 down (19), forecast up (21) -> 0 of 1
    # step 1: window 0 up (12), forecast up (13); window 1 up (22), forecast up (21) -> 2 of 2
    actual = np.array([[10.0, 12.0], [19.0, 22.0]])
    point = np.array([[11.0, 13.0], [21.0, 21.0]])
    np.testing.assert_allclose(m.direction_accuracy(point, actual, LAST), [0.0, 1.0])
    np.testing.assert_allclose(m.flat_share(actual, LAST), [0.5, 0.0])
    total = m.overall(point, actual, LAST)
    assert total["direction_accuracy"] == pytest.approx(2 / 3)  # pooled over the 3 moves, not the mean of steps
    assert total["flat_share"] == pytest.approx(0.25)
    # a forecast that never moves calls no move right; a step where nothing moved has no accuracy
    np.testing.assert_allclose(m.direction_accuracy(m.last_value_forecast(LAST, 2), actual, LAST), [0.0, 0.0])
    all_flat = m.last_value_forecast(LAST, 2)
    assert np.isnan(m.direction_accuracy(point, all_flat, LAST)).all()
    assert math.isnan(m.overall(point, all_flat, LAST)["direction_accuracy"])


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


def test_fair_crps_of_samples_by_hand():
    # one window, one step, actual 0, samples {-1, 1}: mean|x-y| = 1, sum_{i!=j}|xi-xj| = 4 -> 1 - 4/(2*2*1) = 0
    paths = np.array([[[-1.0], [1.0]]])
    assert m.crps(paths, np.array([[0.0]]))[0] == pytest.approx(0.0)
    # samples {0, 1, 3}, actual 2: mean|x-y| = 4/3, sum_{i!=j}|xi-xj| = 2*(1+3+2) = 12 -> 4/3 - 12/(2*3*2) = 1/3
    paths = np.array([[[0.0], [1.0], [3.0]]])
    assert m.crps(paths, np.array([[2.0]]))[0] == pytest.approx(1 / 3)
    # a single sample is a point forecast: CRPS = MAE
    one = POINT[:, None, :]
    np.testing.assert_allclose(m.crps(one, ACTUAL), m.mae(POINT, ACTUAL))


def _plain_crps(paths: np.ndarray, actual: np.ndarray) -> float:
    """The plain 1/S^2 estimator (the empirical distribution's CRPS), biased upward by E|X-X'|/2S."""
    spread = np.abs(paths - actual[:, None, :]).mean(axis=1)
    return float((spread - np.abs(paths[:, :, None, :] - paths[:, None, :, :]).mean(axis=(1, 2)) / 2).mean())


def test_fair_crps_does_not_depend_on_the_sample_count():
    # Forecast N(0,1), actual y ~ N(0,1): CRPS(N(0,1), y) = y(2Phi(y)-1) + 2phi(y) - 1/sqrt(pi), whose mean
    # over y is E[2 y Phi(y)] + E[2 phi(y)] - 1/sqrt(pi) = 1/sqrt(pi) + 1/sqrt(pi) - 1/sqrt(pi) = 1/sqrt(pi).
    expected = 1 / math.sqrt(math.pi)  # 0.5642
    rng = np.random.default_rng(0)
    for samples, windows in ((2, 40000), (64, 2000)):
        paths, actual = rng.standard_normal((windows, samples, 1)), rng.standard_normal((windows, 1))
        assert m.crps(paths, actual)[0] == pytest.approx(expected, abs=0.03), samples
    # the plain estimator at S=2 adds E|X-X'|/4 = (2/sqrt(pi))/4 = 0.28
    assert _plain_crps(paths[:, :2], actual) > expected + 0.2


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


def test_skill_against_the_last_value_and_excess_against_drift():
    ours = {"close_mae": 1.0, "close_rmse": 2.0, "close_mape": 5.0, "direction_accuracy": 0.6, "ic": 0.1,
            "crps": 0.5}
    last_value = {"close_mae": 2.0, "close_rmse": 2.0, "close_mape": 4.0, "direction_accuracy": 0.0,
                  "ic": float("nan")}
    drift = {"close_mae": 1.5, "close_rmse": 1.0, "close_mape": 3.0, "direction_accuracy": 0.45, "ic": 0.2}
    s = m.skill(ours, last_value, drift)
    assert s["close_mae_skill"] == pytest.approx(0.5)
    assert s["close_rmse_skill"] == pytest.approx(0.0)
    assert s["close_mape_skill"] == pytest.approx(-0.25)
    assert s["crps_skill"] == pytest.approx(0.75)  # against the last value's MAE (a point forecast's CRPS)
    assert s["direction_accuracy_excess"] == pytest.approx(0.15)  # the last value never moves: drift's instead
    assert "ic_skill" not in s
    assert "direction_accuracy_excess" not in m.skill(ours, last_value)  # no drift given (drift itself)


def test_mape_skips_zero_actuals_and_counts_them():
    # step 0: actuals 0 (skipped), 2, 4 with errors 1 -> 50%, 25%; step 1: actuals 1, 2, 4 -> 100%, 50%, 25%
    actual = np.array([[0.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    point = actual + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(m.mape(point, actual), [37.5, 175 / 3])
        np.testing.assert_allclose(m.by_step(point, actual, np.ones(3))["close_mape_skipped"], [1, 0])
        total = m.overall(point, actual, np.ones(3))
        assert total["close_mape"] == pytest.approx(50.0)  # pooled over the 5 cells it kept
        assert total["close_mape_skipped"] == 1
        zeros = m.overall(point, np.zeros_like(actual), np.ones(3))
    assert math.isnan(zeros["close_mape"]) and zeros["close_mape_skipped"] == 6


def test_ranking_value_makes_every_metric_lower_is_better():
    assert NOMINAL_COVERAGE == pytest.approx(BAND[1] - BAND[0])
    assert ranking_value("eval_close_mae", 0.5) == 0.5
    assert ranking_value("eval_ic", 0.3) == -0.3
    assert ranking_value("eval_drift_close_mae_skill", 0.1) == -0.1
    assert ranking_value("coverage_10_90", 0.7) == pytest.approx(ranking_value("eval_coverage_10_90", 0.9))
    assert ranking_value("eval_pretrained_coverage_10_90", 0.8) == pytest.approx(0.0)
    coverages = [1.0, 0.78, 0.6]  # the widest band covers most, the calibrated one ranks best
    assert min(coverages, key=lambda c: ranking_value("eval_coverage_10_90", c)) == 0.78


@pytest.mark.parametrize("name", [*ACTUAL_FACTS, *(f"eval_{f}" for f in ACTUAL_FACTS)])
def test_facts_about_the_actuals_are_not_objectives_to_maximise(name):
    assert maximised(name) is False


def test_baselines():
    np.testing.assert_allclose(m.last_value_forecast(LAST, 3), [[10, 10, 10], [20, 20, 20]])
    history = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])  # slope 1 and 0
    np.testing.assert_allclose(m.drift_forecast(history, 2), [[4.0, 5.0], [5.0, 5.0]])
