"""The verdicts' test: the size it states on null differentials, the t-test it reduces to, the dates
(not origins) it counts on a panel, and the words it gives."""
import math

import numpy as np
import pytest
from scipy import stats

from kronos_exp.evaluation.comparisons import Dates, Forecasts, compare, per_date
from kronos_exp.metric_names import BETTER, MIN_DATES, NO_DIFFERENCE, TOO_FEW, WORSE
from kronos_exp.evaluation.verdicts import diebold_mariano, hln_factor, long_run_variance

DAY0 = np.datetime64("2024-01-01", "ns")


@pytest.mark.parametrize("n", [9, 11, 27, 32])
def test_on_independent_null_differentials_a_false_verdict_comes_about_5_percent_of_the_time(n):
    """The audit's finding: the bootstrap it replaces gave false verdicts 9-24% of the time here."""
    rng = np.random.default_rng(n)
    false = np.mean([diebold_mariano(rng.normal(size=n)).verdict != NO_DIFFERENCE for _ in range(3000)])
    assert 0.035 <= false <= 0.065, false


def test_without_overlap_it_is_the_one_sample_t_test():
    d = np.random.default_rng(0).normal(0.3, 1.0, size=12)
    result = diebold_mariano(d)
    t = stats.ttest_1samp(d, 0.0)
    assert result.p_value == pytest.approx(t.pvalue, rel=1e-12)
    low, high = t.confidence_interval(0.95)
    assert (result.low, result.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


def test_overlapping_horizons_widen_the_variance_by_the_shared_steps():
    d = np.array([1.0, 2.0, 0.5, 1.5, 3.0, -1.0, 0.0, 2.0])
    e = d - d.mean()
    gamma1 = float(e[1:] @ e[:-1]) / len(d)
    assert long_run_variance(d, 1) == pytest.approx(float(e @ e) / len(d) + 2 * gamma1, rel=1e-12)
    assert hln_factor(8, 2) == pytest.approx(math.sqrt((8 + 1 - 4 + 2 / 8) / 8), rel=1e-12)


def test_too_few_dates_give_no_verdict_and_say_so():
    assert diebold_mariano(np.full(MIN_DATES - 1, -5.0) + np.arange(MIN_DATES - 1)).verdict == TOO_FEW
    assert diebold_mariano(np.arange(6.0) - 10, lag=3).verdict == TOO_FEW  # the lag eats the dates


@pytest.mark.parametrize("lower_is_better, expected", [(True, BETTER), (False, WORSE)])
def test_the_verdict_follows_the_metrics_direction(lower_is_better, expected):
    d = -1.0 + 0.1 * np.random.default_rng(1).normal(size=20)  # clearly below 0
    assert diebold_mariano(d, lower_is_better=lower_is_better).verdict == expected


def test_identical_forecasts_differ_by_nothing():
    result = diebold_mariano(np.zeros(10))
    assert result.verdict == NO_DIFFERENCE and result.estimate == result.low == result.high == 0.0


def _panel(errors: np.ndarray) -> tuple[np.ndarray, Dates]:
    """errors [dates, series] as absolute errors of a one-step forecast, with each origin's date."""
    dates, series = errors.shape
    return errors.reshape(-1, 1), Dates(np.repeat(DAY0 + np.arange(dates).astype("timedelta64[D]"), series), 0)


def test_a_panel_counts_dates_not_origins():
    """Eight copies of one series are one piece of evidence per date, not eight: the verdict on the
    panel is the verdict on the series (treating them as separate origins gave 44% coverage)."""
    d = np.random.default_rng(3).normal(0.4, 1.0, size=(10, 1))
    one_err, one_dates = _panel(10 + d)
    many_err, many_dates = _panel(np.repeat(10 + d, 8, axis=1))
    one = compare("close_mae", Forecasts(one_err), {"ref": Forecasts(np.full_like(one_err, 10))},
                  np.zeros_like(one_err), np.ones(len(one_err)), one_dates)[0]
    many = compare("close_mae", Forecasts(many_err), {"ref": Forecasts(np.full_like(many_err, 10))},
                   np.zeros_like(many_err), np.ones(len(many_err)), many_dates)[0]
    assert many.difference.dates == one.difference.dates == 10
    assert many.difference.p_value == pytest.approx(one.difference.p_value, rel=1e-12)


def test_on_a_panel_ic_is_a_correlation_across_the_series_at_each_date():
    rng = np.random.default_rng(4)
    actual = rng.normal(size=(5 * 4, 1))
    point = actual + 0.5 * rng.normal(size=actual.shape)
    last = np.ones(len(actual))
    _, dates = _panel(np.zeros((5, 4)))
    values = per_date("ic", Forecasts(point + 1), actual + 1, last, dates)
    expected = [np.corrcoef(point[4 * t:4 * t + 4, 0], actual[4 * t:4 * t + 4, 0])[0, 1] for t in range(5)]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_a_metric_that_needs_paths_is_compared_with_point_forecasters_on_their_absolute_error():
    rng = np.random.default_rng(5)
    actual = rng.normal(size=(12, 3)) + 100
    paths = actual[:, None, :] + rng.normal(size=(12, 4, 3))
    model = Forecasts(paths.mean(axis=1), paths)
    dates = Dates(DAY0 + np.arange(12).astype("timedelta64[D]"), 0)
    sampled, point = compare("crps", model, {"pretrained": model, "drift": Forecasts(actual + 1)}, actual,
                             actual[:, 0], dates)
    assert (sampled.metric, point.metric) == ("crps", "close_mae")
    assert sampled.difference.estimate == 0.0 and point.difference.dates == 12
