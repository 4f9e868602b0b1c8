"""What the eval step reports, as numbers and lines: each split's origins in price units, every
forecaster's scores, the comparisons' differences, the backtests and the closing summary, and the
outcome of an evaluation as plain values (Validation, Evaluation) for whoever records it."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import FEATURES
from ..metric_names import (ACTUAL_FACTS, ERROR_METRICS, MIN_DATES, POINT_METRICS, SAMPLE_METRICS, SCORE_METRICS,
                            TOO_FEW)
from ..schemas import EvalConfig
from ..window import WindowSpec
from . import backtest as B
from . import metrics as M
from .comparisons import Comparison, Dates, Forecasts, compared_on
from .verdicts import METHOD

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
        on = compared_on(settings.metric, sampled=reference == PRETRAINED)  # the baselines are point forecasts
        difference = f"eval_{TEST}_{on}_vs_{reference}"
        names += [difference, f"{difference}_low", f"{difference}_high", f"{difference}_p"]
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
    lag: int = 0  # horizon steps neighbouring origins of one series share (evaluation.origins)

    @property
    def dates(self) -> Dates:
        """Each origin's date (its last observed bar) and the lag, as the verdicts test them."""
        return Dates(self.trades.start, self.lag)

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
    periods = int(next(iter(trading.values()))["periods"])
    sharpes = [f"{name} {m['sharpe']:.2f} (se {m['sharpe_se']:.2f})" for name, m in trading.items()]
    return (f"backtest (k={k}, {cost_bps:g} bp per turnover, {periods} periods), annualised Sharpe with its "
            "standard error (Lo 2002): " + ", ".join(sharpes))


def no_backtest_line(test: SplitOrigins) -> str:
    return (f"backtest: not run: the test origins give {B.periods(test.trades)} periods that do not overlap, "
            f"fewer than {B.MIN_PERIODS} (more test rows, a larger eval.windows or a shorter eval.pred_len give more)")


def prefixed(split: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{split}_{k}": v for k, v in metrics.items()}


def differences(comparisons: list[Comparison]) -> dict[str, float]:
    """``test_<metric>_vs_<reference>``: the mean per-date difference, its interval's ends as ``_low`` /
    ``_high`` and the test's p-value as ``_p`` (NaN where there is no test)."""
    out = {}
    for c in comparisons:
        name, d = f"{TEST}_{c.metric}_vs_{c.reference}", c.difference
        out.update({name: d.estimate, f"{name}_low": d.low, f"{name}_high": d.high, f"{name}_p": d.p_value})
    return out


def summary_lines(metric: str, val: SplitOrigins, chooser: dict, test: SplitOrigins, report: dict, comparisons: list,
             label: str) -> list[str]:
    """The eval's lines in the run's closing summary: what chose, what it reports, and the verdicts."""
    def with_baselines(scores: dict) -> str:
        baselines = [f"{b.replace('_', ' ')} {scores[metric_name(b, metric)]:.5g}" for b in BASELINES
                     if metric_name(b, metric) in scores]  # a point forecaster has no CRPS or band
        return f"{metric} {scores[metric]:.5g}" + (f" ({', '.join(baselines)})" if baselines else "")

    lines = [f"chooses on val  ({len(val.chosen)} origins): {with_baselines(chooser)}",
             f"reports on test ({len(test.chosen)} origins on {len(np.unique(test.dates.of_origin))} dates): "
             f"{with_baselines(report)}"]
    for c in comparisons:
        d = c.difference
        if math.isnan(d.low):
            lines.append(f"  vs {c.reference:<11} {c.metric} difference {d.estimate:+.4g}: {c.verdict}"
                         + (f" ({d.dates} dates, at least {MIN_DATES} needed)" if c.verdict == TOO_FEW else ""))
            continue
        lines.append(f"  vs {c.reference:<11} {c.metric} difference {d.estimate:+.4g}, 95% interval "
                     f"[{d.low:+.4g}, {d.high:+.4g}], p {d.p_value:.3f}: {c.verdict}")
    lines.append(f"model {label}; verdicts: {METHOD} (lag {test.lag})" if comparisons else f"model {label}")
    return lines


def score(forecasts: dict[str, Forecasts], o: SplitOrigins) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every forecaster's metrics over all steps and by step, error skills against the last value and
    score excesses against drift; the facts about the actuals once, unprefixed."""
    overall, steps = {}, {}
    sections = o.dates.cross_sections
    for name, f in forecasts.items():
        for metric, value in M.overall(f.point, o.actual, o.last, f.paths, sections).items():
            if name == MODEL or metric not in ACTUAL_FACTS:
                overall[metric_name(name, metric)] = value
        for metric, values in M.by_step(f.point, o.actual, o.last, f.paths, sections).items():
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


def forecasts_table(splits: list[tuple[SplitOrigins, dict[str, Forecasts]]]) -> pd.DataFrame:
    """One row per split, origin, step and forecaster: the origin's date and last close, the actual,
    the point forecast and, when sampled, the band (forecasts.csv; the sample paths themselves go
    beside it, so every metric recomputes from the two)."""
    rows = []
    for o, forecasts in splits:
        origin_dates = o.dates.of_origin
        for k in range(len(o.chosen)):
            for h, ts in enumerate(o.y_timestamps[k]):
                for name, f in forecasts.items():
                    row = {"split": o.split, "origin": k, "series": o.names[k], "origin_date": str(origin_dates[k]),
                           "last_close": o.last[k], "step": h + 1, "timestamp": str(ts), "forecaster": name,
                           "actual_close": o.actual[k, h], "close": f.point[k, h]}
                    if f.sampled:
                        row["close_q10"], row["close_q90"] = np.quantile(f.paths[k, :, h], M.BAND)
                    rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Validation:
    """What chooses: the validation split's origins and every forecaster's scores, overall and by
    step; ``headline`` is ``eval.metric``'s (what ranks versions and is the default objective)."""
    origins: SplitOrigins
    forecasts: dict[str, Forecasts]
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
    def table(self) -> pd.DataFrame:
        """forecasts.csv: both splits' forecasts (forecasts_table)."""
        return forecasts_table([(self.validation.origins, self.validation.forecasts), (self.test, self.forecasts)])

    @property
    def paths(self) -> dict[str, np.ndarray]:
        """``<split>_<forecaster>``: the sampled close paths [W, S, H] of each sampling forecaster."""
        both = [(VAL, self.validation.forecasts), (TEST, self.forecasts)]
        return {f"{split}_{name}": f.paths for split, forecasts in both for name, f in forecasts.items() if f.sampled}

    @property
    def verdicts(self) -> dict[str, str]:
        """``verdict_vs_<reference>``: better, worse or no significant difference."""
        return {f"verdict_vs_{c.reference}": c.verdict for c in self.comparisons}

    @property
    def tags(self) -> dict[str, str]:
        """What was evaluated, on how many origins, with which verdicts, IC and windows."""
        windows = {f"eval_window{'' if name == MODEL else f'_{name}'}": describe(w) for name, w in self.windows.items()}
        ic = ("cross-sectional: across the series at each date, averaged over dates"
              if self.test.dates.cross_sections is not None else "time-series: across the origins of one series")
        return {"evaluated": self.label, "eval_origins": f"val {len(self.validation.origins.chosen)}, test "
                f"{len(self.test.chosen)}", "eval_verdicts": METHOD, "eval_ic": ic, **windows}
