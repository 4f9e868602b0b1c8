"""What the eval step reports, as numbers and lines: each split's origins in price units, every
forecaster's scores, the comparisons' differences, the backtests and the closing summary, and the
outcome of an evaluation as plain values (Validation, Evaluation) for whoever records it."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import FEATURES
from ..metric_names import ACTUAL_FACTS, ERROR_METRICS, POINT_METRICS, SAMPLE_METRICS, SCORE_METRICS
from ..schemas import EvalConfig
from ..window import WindowSpec
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


def forecasters(split: str, published: bool) -> list[str]:
    """Who forecasts a split: the published weights (when compared) only report, on test; they choose nothing."""
    return [MODEL, *([PRETRAINED] if published and split == TEST else []), *BASELINES]


def reported_metrics(settings: EvalConfig, published: bool) -> list[str]:
    """Every ``eval_<split>_...`` metric an evaluation with ``settings`` reports to the job run."""
    base = POINT_METRICS + (SAMPLE_METRICS if settings.sample_count > 1 else ())
    names = []
    for split in (VAL, TEST):
        for forecaster in forecasters(split, published):
            names += [f"eval_{split}_{metric_name(forecaster, m)}" for m in base]
            if forecaster != "last_value":
                names += [f"eval_{split}_{metric_name(forecaster, m)}_skill" for m in ERROR_METRICS if m in base]
            if forecaster not in BASELINES:  # excess over drift: not for drift itself
                names += [f"eval_{split}_{metric_name(forecaster, m)}_excess" for m in SCORE_METRICS]
    for reference in forecasters(TEST, published)[1:]:
        difference = f"eval_{TEST}_{settings.metric}_vs_{reference}"
        names += [difference, f"{difference}_low", f"{difference}_high"]
    return list(dict.fromkeys(names))


def describe(window: WindowSpec) -> str:
    """``lookback 48, clip 2.0, max_context 512``: the window a forecaster normalised with."""
    lookback = "all rows" if window.lookback is None else window.lookback
    return f"lookback {lookback}, clip {window.clip}, max_context {window.max_context}"


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


def forecasts_table(o: SplitOrigins, forecasts: dict[str, Forecasts]) -> pd.DataFrame:
    """One row per origin, step and forecaster (point, and the band when sampled): forecasts.csv."""
    rows = []
    for k in range(len(o.chosen)):
        for h, ts in enumerate(o.y_timestamps[k]):
            for name, f in forecasts.items():
                row = {"origin": k, "series": o.names[k], "step": h + 1, "timestamp": str(ts),
                       "forecaster": name, "actual_close": o.actual[k, h], "close": f.point[k, h]}
                if f.paths is not None and f.paths.shape[1] > 1:
                    row["close_q10"], row["close_q90"] = np.quantile(f.paths[k, :, h], M.BAND)
                rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Validation:
    """What chooses: the validation split's origins and every forecaster's scores, overall and by
    step; ``headline`` is ``eval.metric``'s (what ranks versions and is the default objective)."""
    origins: SplitOrigins
    scores: dict[str, float]
    steps: dict[str, np.ndarray]
    headline: float


@dataclass
class Evaluation:
    """An evaluation's outcome, as plain values: what chose (``validation``), the test split's
    origins, forecasts, scores (unprefixed, overall and by step), comparisons and trades; every
    metric by its logged name, the summary lines, and the window each sampling forecaster used."""
    label: str
    windows: dict[str, WindowSpec]
    validation: Validation
    test: SplitOrigins
    forecasts: dict[str, Forecasts]
    scores: dict[str, float]
    steps: dict[str, np.ndarray]
    comparisons: list[Comparison]
    trades: dict[str, B.BacktestResult]
    metrics: dict[str, float]
    summary: list[str]

    @property
    def headline(self) -> float:
        return self.validation.headline

    @property
    def steps_by_split(self) -> dict[str, dict[str, np.ndarray]]:
        return {VAL: self.validation.steps, TEST: self.steps}

    @property
    def verdicts(self) -> dict[str, str]:
        """``verdict_vs_<reference>``: better, worse or no significant difference."""
        return {f"verdict_vs_{c.reference}": c.verdict for c in self.comparisons}

    @property
    def tags(self) -> dict[str, str]:
        """What was evaluated, on how many origins, with which intervals and windows."""
        windows = {f"eval_window{'' if name == MODEL else f'_{name}'}": describe(w) for name, w in self.windows.items()}
        return {"evaluated": self.label, "eval_origins": f"val {len(self.validation.origins.chosen)}, test "
                f"{len(self.test.chosen)}", "eval_intervals": METHOD, **windows}
