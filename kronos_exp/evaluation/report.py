"""What the eval step reports, as numbers and lines: each split's origins in price units, every
forecaster's scores, the comparisons' differences, the backtests and the closing summary."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import FEATURES
from ..metric_names import ACTUAL_FACTS, POINT_METRICS, SAMPLE_METRICS
from . import backtest as B
from . import metrics as M
from .comparisons import Comparison, Forecasts
from .intervals import METHOD

CLOSE = FEATURES.index("close")
MODEL = "model"  # the evaluated (fine-tuned) predictor: its metrics carry no forecaster prefix
BASELINES = ("last_value", "drift")
PRETRAINED = "pretrained"
VAL, TEST = "val", "test"  # the split that chooses, the split that reports


def metric_name(forecaster: str, metric: str) -> str:
    """``close_mae`` for the evaluated model, ``last_value_close_mae`` for the others."""
    return metric if forecaster == MODEL else f"{forecaster}_{metric}"


@dataclass
class SplitOrigins:
    """The forecast origins of one split, in price units: their windows' rows, timestamps and series."""
    split: str
    chosen: list[tuple[int, int]]  # (series, first row of the window in the split's series)
    raws: np.ndarray  # [W, L+P, 6]
    stamps: list
    names: list[str]
    lookback: int
    pred_len: int

    @property
    def actual(self) -> np.ndarray:
        return self.raws[:, self.lookback:self.lookback + self.pred_len, CLOSE]

    @property
    def history(self) -> np.ndarray:
        return self.raws[:, :self.lookback, CLOSE]

    @property
    def last(self) -> np.ndarray:
        return self.raws[:, self.lookback - 1, CLOSE]

    @functools.cached_property
    def trades(self) -> B.Origins:
        """Each origin as the backtest trades it: from the last observed close to the horizon's last
        (built once: the backtests of every forecaster and the intervals read it)."""
        end = self.lookback + self.pred_len - 1
        return B.Origins(self.names, [s[self.lookback - 1] for s in self.stamps], [s[end] for s in self.stamps],
                         self.last, self.actual[:, -1])

    @property
    def y_timestamps(self) -> list[pd.Series]:
        return [pd.Series(s[self.lookback:self.lookback + self.pred_len]) for s in self.stamps]


def trade(test: SplitOrigins, forecasts: dict[str, Forecasts], k: int, cost_bps: float) -> dict:
    """The test forecasts traded (the last value has no direction to trade), and buy-and-hold."""
    out = {name: B.backtest(test.trades, f.point[:, -1], k, cost_bps) for name, f in forecasts.items()
           if name != "last_value"}
    return {**out, "buy_and_hold": B.buy_and_hold(test.trades, cost_bps)}


def backtest_metrics(trading: dict[str, dict[str, float]]) -> dict[str, float]:
    """``backtest_sharpe`` for the model, ``drift_backtest_sharpe``, ``buy_and_hold_backtest_sharpe``, ..."""
    return {metric_name(name, f"backtest_{k}"): v for name, m in trading.items() for k, v in m.items()}


def backtest_line(trading: dict[str, dict[str, float]], k: int, cost_bps: float) -> str:
    sharpes = []
    for name, m in trading.items():
        sharpes.append(f"{name} {m['sharpe']:.2f} [{m['sharpe_low']:.2f}, {m['sharpe_high']:.2f}]")
    return f"backtest (k={k}, {cost_bps:g} bp per turnover), annualised Sharpe: " + ", ".join(sharpes)


def prefixed(split: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{split}_{k}": v for k, v in metrics.items()}


def differences(metric: str, comparisons: list[Comparison]) -> dict[str, float]:
    """``test_<metric>_vs_<reference>`` with its interval's ends as ``_low`` / ``_high``."""
    out = {}
    for c in comparisons:
        name = f"{TEST}_{metric}_vs_{c.reference}"
        out.update({name: c.difference.estimate, f"{name}_low": c.difference.low, f"{name}_high": c.difference.high})
    return out


def summary_lines(metric: str, val: SplitOrigins, chooser: dict, test: SplitOrigins, report: dict, comparisons: list,
             label: str) -> list[str]:
    """The eval's lines in the run's closing summary: what chose, what it reports, and the verdicts."""
    def with_baselines(scores: dict) -> str:
        return (f"{metric} {scores[metric]:.5g} (last value {scores[metric_name('last_value', metric)]:.5g}, "
                f"drift {scores[metric_name('drift', metric)]:.5g})")

    lines = [f"chooses on val  ({len(val.chosen)} origins): {with_baselines(chooser)}",
             f"reports on test ({len(test.chosen)} origins): {with_baselines(report)}"]
    for c in comparisons:
        d = c.difference
        lines.append(f"  vs {c.reference:<11} {metric} difference {d.estimate:+.4g}, 95% interval "
                     f"[{d.low:+.4g}, {d.high:+.4g}]: {c.verdict}")
    lines.append(f"model {label}; intervals: {METHOD} (block {comparisons[0].difference.block})"
                 if comparisons else f"model {label}")
    return lines


def score(forecasts: dict[str, Forecasts], o: SplitOrigins) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every forecaster's metrics over all steps and by step, error skills against the last value and
    score excesses against drift; the facts about the actuals once, unprefixed."""
    overall, steps = {}, {}
    for name, f in forecasts.items():
        for metric, value in M.overall(f.point, o.actual, o.last, f.paths).items():
            if name == MODEL or metric not in ACTUAL_FACTS:
                overall[metric_name(name, metric)] = value
        for metric, values in M.by_step(f.point, o.actual, o.last, f.paths).items():
            if name == MODEL or metric not in ACTUAL_FACTS:
                steps[metric_name(name, metric)] = values
    last_value, drift = ({m: overall[metric_name(b, m)] for m in POINT_METRICS} for b in BASELINES)
    for name in forecasts:
        if name == "last_value":
            continue
        own = {m: overall[metric_name(name, m)] for m in POINT_METRICS + SAMPLE_METRICS
               if metric_name(name, m) in overall}
        against = None if name == "drift" else drift  # drift's excess over itself would be 0 by definition
        overall.update({metric_name(name, k): v for k, v in M.skill(own, last_value, against).items()})
    return overall, steps


def fan_chart_windows(o: SplitOrigins, limit: int) -> list[int]:
    """Positions of the middle origin of each of the first ``limit`` series."""
    by_series: dict[str, list[int]] = {}
    for pos, name in enumerate(o.names):
        by_series.setdefault(name, []).append(pos)
    return [positions[len(positions) // 2] for positions in list(by_series.values())[:limit]]
