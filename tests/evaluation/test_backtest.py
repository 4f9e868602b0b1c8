"""The backtest on markets whose answer is known: a forecaster that knows the next return earns, one of
pure noise on a random walk does not beyond its standard error, overlapping periods are never
compounded, a panel always ranks, and the accounting matches hand-built numbers."""
import math

import numpy as np
import pytest

from kronos_exp.errors import ConfigError
from kronos_exp.evaluation.backtest import (Origins, annualised_sharpe, backtest, buy_and_hold, max_drawdown, periods,
                                            sharpe_standard_error)

DAY = np.timedelta64(1, "D")


def market(closes: np.ndarray, days: float = 7.0) -> Origins:
    """Origins of a market with closes [T + 1, N] at the period boundaries, one origin per series and period."""
    periods, series = closes.shape[0] - 1, closes.shape[1]
    minutes = np.round(np.arange(periods + 1) * days * 24 * 60).astype("timedelta64[m]")
    times = np.datetime64("2020-01-01T00:00") + minutes
    t, i = np.meshgrid(np.arange(periods), np.arange(series), indexing="ij")
    t, i = t.ravel(), i.ravel()
    return Origins(np.array([f"s{j}" for j in i]), times[t], times[t + 1], closes[t, i], closes[t + 1, i])


def pick(origins: Origins, rows: np.ndarray) -> Origins:
    return Origins(*(getattr(origins, f)[rows] for f in ("series", "start", "end", "last", "actual_end")))


def closes_from(returns: np.ndarray) -> np.ndarray:
    return 100 * np.vstack([np.ones(returns.shape[1]), np.cumprod(1 + returns, axis=0)])


def test_a_forecaster_that_knows_the_signal_earns_a_sharpe_clearly_above_zero():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(150, 6))
    origins = market(closes_from(0.01 * signal + 0.01 * rng.normal(size=signal.shape)))
    forecast = origins.last * (1 + 0.01 * signal.ravel())
    result = backtest(origins, forecast, k=2, cost_bps=5.0)
    metrics = result.metrics()
    assert metrics["sharpe"] > 3 and metrics["sharpe"] > 3 * metrics["sharpe_se"]
    assert metrics["cumulative_return"] > 0 and metrics["periods"] == 150 and metrics["cash_periods"] == 0
    shuffled = np.random.default_rng(1).permutation(len(origins.series))  # the order of the rows does not matter
    again = backtest(pick(origins, shuffled), forecast[shuffled], k=2, cost_bps=5.0)
    np.testing.assert_allclose(again.returns, result.returns, rtol=0, atol=1e-15)


def test_noise_on_a_random_walk_earns_nothing_beyond_its_standard_error():
    """Over 500 random walks of 40 periods, the Sharpe lies beyond 1.96 standard errors about 5% of
    the time (the bootstrap interval it replaces missed 17-24% at 9-11 periods)."""
    rng = np.random.default_rng(0)
    beyond = []
    for _ in range(500):
        origins = market(closes_from(0.01 * rng.normal(size=(40, 1))))
        metrics = backtest(origins, origins.last * (1 + rng.normal(size=40)), k=1, cost_bps=0.0).metrics()
        beyond.append(abs(metrics["sharpe"]) > 1.96 * metrics["sharpe_se"])
    assert 0.02 <= np.mean(beyond) <= 0.08, np.mean(beyond)


def test_the_sharpe_standard_error_is_lo_2002_scaled_to_a_year():
    per_period = 0.3
    assert sharpe_standard_error(per_period * math.sqrt(52), 26, 52) == pytest.approx(
        math.sqrt((1 + per_period ** 2 / 2) / 26) * math.sqrt(52), rel=1e-12)
    assert math.isnan(sharpe_standard_error(math.nan, 26, 52))


def test_overlapping_periods_are_never_compounded():
    """Origins every day with a two-day horizon: only every other period is traded."""
    origins = market(closes_from(0.01 * np.random.default_rng(2).normal(size=(10, 1))), days=1.0)
    overlapping = Origins(origins.series, origins.start, origins.end + np.timedelta64(1, "D"), origins.last,
                          origins.actual_end)
    result = backtest(overlapping, overlapping.last * 1.01, 1, 0.0)
    assert periods(overlapping) == len(result.returns) == 5
    assert (np.diff(result.times[1:]) >= np.timedelta64(2, "D")).all()


def test_a_panel_whose_dates_never_meet_ranks_anyway_and_stays_in_cash():
    """Two series at different dates: no period holds 2k series. It is not silently traded by sign."""
    origins = market(np.array([[100.0, 100.0], [102.0, 99.0], [101.0, 100.0], [103.0, 98.0]]))
    apart = Origins(origins.series, origins.start + (origins.series == "s1") * np.timedelta64(1, "h"),
                    origins.end + (origins.series == "s1") * np.timedelta64(1, "h"), origins.last, origins.actual_end)
    result = backtest(apart, apart.last * 1.01, 1, 0.0)
    assert result.cash_periods == len(result.returns) and (result.returns == 0).all()


def test_costs_take_exactly_the_turnover_times_the_rate():
    closes = np.array([[100.0, 100.0], [102.0, 99.0], [101.0, 100.0], [103.0, 102.0]])
    origins = market(closes)
    forecast = origins.last * np.array([1.01, 0.99, 0.99, 1.01, 0.98, 1.02])  # s0 > s1, then s1 > s0 twice
    free, paid = backtest(origins, forecast, 1, 0.0), backtest(origins, forecast, 1, 10.0)
    np.testing.assert_array_equal(free.turnover, [1.0, 2.0, 0.0])  # open, flip both legs, hold
    gross = [0.5 * 0.02 - 0.5 * -0.01, -0.5 * (101 / 102 - 1) + 0.5 * (100 / 99 - 1),
             -0.5 * (103 / 101 - 1) + 0.5 * 0.02]
    np.testing.assert_allclose(free.returns, gross, rtol=0, atol=1e-15)
    np.testing.assert_allclose(paid.returns, np.array(gross) - 1e-3 * np.array([1.0, 2.0, 0.0]), rtol=0, atol=1e-15)
    assert paid.metrics()["cumulative_return"] == pytest.approx(np.prod(1 + paid.returns) - 1, abs=1e-15)
    assert paid.metrics()["turnover"] == 1.0


def test_a_period_with_fewer_than_2k_series_stays_in_cash():
    origins = market(np.array([[100.0, 100.0], [102.0, 99.0], [101.0, 100.0]]))
    keep = np.array([0, 1, 2])  # the second period has only s0
    thin = pick(origins, keep)
    result = backtest(thin, thin.last * np.array([1.01, 0.99, 1.05]), 1, 10.0)
    assert result.cash_periods == 1
    np.testing.assert_array_equal(result.turnover, [1.0, 1.0])  # the cash period closes both legs
    np.testing.assert_allclose(result.returns, [0.015 - 1e-3, -1e-3], rtol=0, atol=1e-15)


def test_one_series_goes_long_or_short_on_the_sign_of_the_forecast():
    origins = market(np.array([[100.0], [102.0], [103.02], [99.9294]]))  # +2%, +1%, -3%
    result = backtest(origins, origins.last * np.array([1.001, 0.98, 1.0]), 1, 0.0)  # up, down, flat
    np.testing.assert_allclose(result.returns, [0.02, -0.01, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.turnover, [1.0, 2.0, 1.0])


def test_drawdown_annualised_return_and_sharpe_on_hand_built_numbers():
    origins = market(np.array([[100.0], [110.0], [99.0], [121.0]]), days=365.25 * 2 / 3)  # two years, 3 periods
    result = backtest(origins, origins.last * 1.01, 1, 0.0)
    np.testing.assert_allclose(result.equity, [1.0, 1.1, 0.99, 1.21], rtol=1e-14)
    metrics = result.metrics()
    assert metrics["max_drawdown"] == pytest.approx(0.1, abs=1e-14)  # 1.1 -> 0.99
    assert metrics["annualised_return"] == pytest.approx(0.1, abs=1e-12)  # 1.21 over 2 years
    r = np.array([0.1, -0.1, 0.22222222222222222])
    assert metrics["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(1.5), rel=1e-12)
    assert max_drawdown(np.array([1.0, 1.2, 1.3])) == 0.0
    assert math.isnan(annualised_sharpe(np.array([0.01]), 12)) and math.isnan(annualised_sharpe(np.zeros(5), 12))


def test_buy_and_hold_trades_once_in_equal_parts():
    origins = market(np.array([[100.0, 50.0], [110.0, 50.0], [121.0, 55.0]]))
    result = buy_and_hold(origins, 10.0)
    np.testing.assert_array_equal(result.turnover, [1.0, 0.0])
    np.testing.assert_allclose(result.returns, [0.05 - 1e-3, 0.1], rtol=0, atol=1e-15)
    assert result.times[0] == origins.start.min() and result.times[-1] == origins.end.max()


@pytest.mark.parametrize("k", [0, 2])
def test_k_out_of_range_names_the_setting(k):
    origins = market(np.full((3, 3), 100.0))
    with pytest.raises(ConfigError, match=r"eval\.backtest_k"):
        backtest(origins, origins.last, k, 5.0)


def test_a_negative_cost_names_the_setting():
    origins = market(np.full((3, 2), 100.0))
    with pytest.raises(ConfigError, match=r"eval\.backtest_cost_bps"):
        backtest(origins, origins.last, 1, -1.0)
