"""What the forecasts would have earned: a long/short backtest on the forecast origins, and buy-and-hold.

A *period* is one origin date: every series with an origin at that date is traded from its last
observed close to its actual close at the horizon's end. Periods are compounded, so they must not
overlap in time: a period that starts before the previous one's last horizon end is left out (only
with ``eval.overlap``; the default origins are a horizon apart). The strategy follows from the
data, never from which origins happen to line up:

- ranking (a panel: two or more series): at each period with at least 2k series present, +0.5 in
  equal parts on the k series with the highest forecast return (forecast_end / last - 1) and -0.5 on
  the k lowest; a period with fewer series holds no position and is counted in ``cash_periods``;
- sign (one series): weight +1 / -1 / 0 by the sign of the forecast return;
- buy-and-hold: equal weights, long, on the series at each period.

A period's return is the weighted sum of the actual returns (actual_end / last - 1) minus
``cost_bps / 1e4`` times the turnover sum |w_new - w_old| (the first period trades from cash; nothing
is sold at the end). With fewer than MIN_PERIODS periods there is no backtest: its Sharpe would be
noise (its standard error, reported beside it, is near its size at a dozen periods).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

YEAR = np.timedelta64(int(365.25 * 24 * 3600), "s")
MIN_PERIODS = 8


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

    def metrics(self) -> dict[str, float]:
        """cumulative_return = equity_end - 1; annualised_return = equity_end^(1 / years) - 1 (years:
        first origin to last horizon end, 365.25 days each); sharpe and its standard error sharpe_se
        (annualised_sharpe, sharpe_standard_error); max_drawdown, see max_drawdown; turnover: mean per period."""
        end = self.equity[-1]
        per_year = len(self.returns) / self.years
        sharpe = annualised_sharpe(self.returns, per_year)
        return {"cumulative_return": float(end - 1),
                "annualised_return": float(max(end, 0.0) ** (1 / self.years) - 1),
                "sharpe": sharpe, "sharpe_se": sharpe_standard_error(sharpe, len(self.returns), per_year),
                "max_drawdown": max_drawdown(self.equity), "turnover": float(self.turnover.mean()),
                "periods": float(len(self.returns)), "cash_periods": float(self.cash_periods)}


def annualised_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """mean / std (ddof=1) of the period returns times sqrt(periods per year), where periods per
    year = periods / years of the backtest; NaN with fewer than 2 periods or a std of 0."""
    if len(returns) < 2:
        return math.nan
    std = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / std * math.sqrt(periods_per_year) if std > 0 else math.nan


def sharpe_standard_error(sharpe: float, periods: int, periods_per_year: float) -> float:
    """The standard error of an annualised Sharpe ratio estimated from ``periods`` independent period
    returns (Lo 2002): sqrt((1 + SR_p^2 / 2) / P) for the per-period SR_p = sharpe / sqrt(periods per
    year), scaled back to a year. At a dozen periods it is about as large as the Sharpe itself."""
    if not math.isfinite(sharpe) or periods < 2:
        return math.nan
    per_period = sharpe / math.sqrt(periods_per_year)
    return math.sqrt((1 + 0.5 * per_period ** 2) / periods * periods_per_year)


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


def traded(origins: Origins) -> np.ndarray:
    """[O] which origins the backtest trades: those of the periods that start at or after the last
    horizon end of the period before (walking forward in time)."""
    starts, row = np.unique(origins.start, return_inverse=True)
    ends = np.full(len(starts), origins.end.min())
    np.maximum.at(ends, row, origins.end)
    kept, free_from = np.zeros(len(starts), dtype=bool), None
    for p, (start, end) in enumerate(zip(starts, ends)):
        if free_from is None or start >= free_from:
            kept[p], free_from = True, end
    return kept[row]


def periods(origins: Origins) -> int:
    """How many periods the backtest of these origins trades."""
    return len(np.unique(origins.start[traded(origins)]))


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
    """Trade each origin's forecast close at the horizon's end [O]: rank the series against each other
    on a panel, go long/short on the sign of the forecast return on one series (module docstring)."""
    if k < 1:
        raise ConfigError(f"eval.backtest_k={k}: the backtest needs k >= 1 series on each side")
    series = len(np.unique(origins.series))
    keep = traded(origins)
    origins, forecast_end = _subset(origins, keep), np.asarray(forecast_end, dtype=np.float64)[keep]
    grid, cells = _grid(origins)
    forecast = _matrix(forecast_end / origins.last - 1, cells, grid.actual.shape)
    if series == 1:
        return _account(grid, np.sign(np.nan_to_num(forecast)), cost_bps)
    if 2 * k > series:
        raise ConfigError(f"eval.backtest_k={k}: with {series} series it must lie between 1 and {series // 2} "
                          "(k long and k short)")
    weights, cash = _rank_weights(forecast, k)
    return _account(grid, weights, cost_bps, cash_periods=cash)


def _subset(origins: Origins, keep: np.ndarray) -> Origins:
    return Origins(origins.series[keep], origins.start[keep], origins.end[keep], origins.last[keep],
                   origins.actual_end[keep])


def buy_and_hold(origins: Origins, cost_bps: float) -> BacktestResult:
    """Long in equal parts in every series with an origin at the period; with the same series at every
    period it trades once, at the first."""
    grid, _ = _grid(_subset(origins, traded(origins)))
    present = grid.available.astype(np.float64)
    return _account(grid, present / present.sum(axis=1, keepdims=True), cost_bps)
