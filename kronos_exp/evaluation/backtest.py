"""What the forecasts would have earned: a long/short backtest on the forecast origins, and buy-and-hold.

A *period* is one origin timestamp: every series with an origin at that bar is traded from its last
observed close to its actual close at the horizon's end. The strategies differ only in their weights;
the accounting (costs, equity, metrics) is shared:

- ranking (several series share origin timestamps): at each period with at least 2k series, +0.5 in
  equal parts on the k series with the highest forecast return (forecast_end / last - 1) and -0.5 on
  the k lowest; a period with fewer series holds no position and is counted in ``cash_periods``;
- sign (one series, or series whose origins never share a timestamp): weight +1 / -1 / 0 by the sign
  of the forecast return;
- buy-and-hold: equal weights, long, on the series at each period.

A period's return is the weighted sum of the actual returns (actual_end / last - 1) minus
``cost_bps / 1e4`` times the turnover sum |w_new - w_old| (the first period trades from cash; nothing
is sold at the end). Periods are compounded, which assumes they do not overlap in time: origins of a
series spaced at least a horizon apart (the eval step's default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .intervals import Interval, bootstrap

YEAR = np.timedelta64(int(365.25 * 24 * 3600), "s")


@dataclass(frozen=True)
class Origins:
    """The forecast origins of the test split, one row each: series name, origin timestamp (last
    lookback bar), timestamp of the horizon's last bar, last observed close, actual close at the end."""
    series: np.ndarray
    start: np.ndarray
    end: np.ndarray
    last: np.ndarray
    actual_end: np.ndarray

    def __post_init__(self):
        for name, kind in (("series", str), ("start", "datetime64[ns]"), ("end", "datetime64[ns]"),
                           ("last", np.float64), ("actual_end", np.float64)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=kind))
        n = len(self.series)
        if n == 0 or any(len(a) != n for a in (self.start, self.end, self.last, self.actual_end)):
            raise ValueError("Origins needs at least one origin and equal lengths in every field")


@dataclass(frozen=True)
class BacktestResult:
    """Period returns in time order and what they add up to. ``times`` [P + 1] stamps the equity
    curve: the first origin, then each period's last horizon end."""
    times: np.ndarray
    returns: np.ndarray
    turnover: np.ndarray
    years: float
    cash_periods: int

    @property
    def equity(self) -> np.ndarray:
        """[P + 1] the value of 1 invested at the first origin, after each period (compounded)."""
        return np.concatenate([[1.0], np.cumprod(1.0 + self.returns)])

    def sharpe_interval(self) -> Interval:
        """The annualised Sharpe and its moving-block bootstrap interval over the periods."""
        per_year = len(self.returns) / self.years
        return bootstrap(lambda idx: annualised_sharpe(self.returns[idx], per_year), len(self.returns))

    def metrics(self) -> dict[str, float]:
        """cumulative_return = equity_end - 1; annualised_return = equity_end^(1 / years) - 1 (years:
        first origin to last horizon end, 365.25 days each); sharpe (with sharpe_low/_high, its 95%
        interval), see annualised_sharpe; max_drawdown, see max_drawdown; turnover: mean per period."""
        end = self.equity[-1]
        sharpe = self.sharpe_interval()
        return {"cumulative_return": float(end - 1),
                "annualised_return": float(max(end, 0.0) ** (1 / self.years) - 1),
                "sharpe": sharpe.estimate, "sharpe_low": sharpe.low, "sharpe_high": sharpe.high,
                "max_drawdown": max_drawdown(self.equity), "turnover": float(self.turnover.mean()),
                "periods": float(len(self.returns)), "cash_periods": float(self.cash_periods)}


def annualised_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """mean / std (ddof=1) of the period returns times sqrt(periods per year), where periods per
    year = periods / years of the backtest; NaN with fewer than 2 periods or a std of 0."""
    if len(returns) < 2:
        return math.nan
    std = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / std * math.sqrt(periods_per_year) if std > 0 else math.nan


def max_drawdown(equity: np.ndarray) -> float:
    """The largest fall from a peak: max over t of 1 - equity_t / max_{s<=t} equity_s (0 when it never falls)."""
    return float(np.max(1.0 - equity / np.maximum.accumulate(equity)))


@dataclass(frozen=True)
class _Grid:
    """The origins laid out as [periods, series] matrices (NaN where a series has no origin)."""
    times: np.ndarray
    actual: np.ndarray
    years: float

    @property
    def available(self) -> np.ndarray:
        return np.isfinite(self.actual)


def _grid(origins: Origins) -> tuple[_Grid, tuple[np.ndarray, np.ndarray]]:
    """The [P, N] actual-return matrix, the equity curve's timestamps and each origin's (period, series) cell."""
    starts, row = np.unique(origins.start, return_inverse=True)
    names, col = np.unique(origins.series, return_inverse=True)
    if len(set(zip(row, col))) != len(row):
        raise ValueError("two origins of one series share an origin timestamp")
    ends = np.full(len(starts), origins.end.min())
    np.maximum.at(ends, row, origins.end)
    years = (origins.end.max() - origins.start.min()) / YEAR
    actual = _matrix(origins.actual_end / origins.last - 1, (row, col), (len(starts), len(names)))
    return _Grid(np.concatenate([starts[:1], ends]), actual, float(years)), (row, col)


def _matrix(values: np.ndarray, cells: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.full(shape, np.nan)
    out[cells] = values
    return out


def _account(grid: _Grid, weights: np.ndarray, cost_bps: float, cash_periods: int = 0) -> BacktestResult:
    """Net period returns of holding ``weights`` [P, N] over each period, paying cost per unit of turnover."""
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise ConfigError(f"eval.backtest_cost_bps={cost_bps}: the cost per unit of turnover must be a "
                          "number >= 0 (basis points)")
    turnover = np.abs(np.diff(weights, axis=0, prepend=0.0)).sum(axis=1)
    gross = (weights * np.nan_to_num(grid.actual)).sum(axis=1)
    return BacktestResult(grid.times, gross - cost_bps / 1e4 * turnover, turnover, grid.years, cash_periods)


def _rank_weights(forecast: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """[P, N] long +0.5/k on the k highest forecast returns, short -0.5/k on the k lowest, per period
    with at least 2k series (NaN: no origin); the other periods hold nothing and are counted."""
    weights = np.zeros_like(forecast)
    cash = 0
    for p, row in enumerate(forecast):
        present = np.flatnonzero(np.isfinite(row))
        if len(present) < 2 * k:
            cash += 1
            continue
        order = present[np.argsort(row[present], kind="stable")]
        weights[p, order[-k:]] = 0.5 / k
        weights[p, order[:k]] = -0.5 / k
    return weights, cash


def backtest(origins: Origins, forecast_end: np.ndarray, k: int, cost_bps: float) -> BacktestResult:
    """Trade each origin's forecast close at the horizon's end [O]: rank the series against each other when
    some share an origin timestamp, else go long/short on the sign of the forecast return (module docstring)."""
    if k < 1:
        raise ConfigError(f"eval.backtest_k={k}: the backtest needs k >= 1 series on each side")
    grid, cells = _grid(origins)
    forecast = _matrix(np.asarray(forecast_end, dtype=np.float64) / origins.last - 1, cells, grid.actual.shape)
    if grid.available.sum(axis=1).max() < 2:
        return _account(grid, np.sign(np.nan_to_num(forecast)), cost_bps)
    series = grid.actual.shape[1]
    if 2 * k > series:
        raise ConfigError(f"eval.backtest_k={k}: with {series} series it must lie between 1 and {series // 2} "
                          "(k long and k short)")
    weights, cash = _rank_weights(forecast, k)
    return _account(grid, weights, cost_bps, cash_periods=cash)


def buy_and_hold(origins: Origins, cost_bps: float) -> BacktestResult:
    """Long in equal parts in every series with an origin at the period; with the same series at every
    period it trades once, at the first."""
    grid, _ = _grid(origins)
    present = grid.available.astype(np.float64)
    return _account(grid, present / present.sum(axis=1, keepdims=True), cost_bps)
