"""The evaluation itself, plain values in and out: forecasts that choose on the validation split
and report on the test split. No tracking, no registry, no figures (kronos_exp.eval_step records).

Forecast origins (evaluation.origins) of the validation split give the numbers that select
(``choose``): the caller ranks versions by them before the test split is forecast. Only then
``report`` forecasts the test split: every metric beside the last-value and drift baselines and,
when published weights are compared, those weights with their own tokenizer; the model's
difference from each tested on the per-date losses (evaluation.comparisons, evaluation.verdicts),
and the forecasts traded (evaluation.backtest). No test number feeds a choice.

Each origin is forecast ``eval.sample_count`` times from its lookback rows, every forecaster from
the same seed, each normalising as it was trained to (the window recorded with its checkpoint:
kronos_exp.window). The published weights, which record none, see as many history rows as the
evaluated model, so the comparison is fair.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import FEATURES, DataSplits
from ..errors import ConfigError
from ..forecasting import KronosPredictor, sample_paths
from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import resolve_checkpoint_dir
from ..schemas import EvalConfig
from ..train.state import seed_everything
from ..window import WindowSpec
from . import backtest as B
from . import metrics as M
from .comparisons import Forecasts, compare
from .origins import choose_origins
from .report import (CLOSE, MODEL, PRETRAINED, TEST, VAL, Evaluation, SplitOrigins, Validation, backtest_line,
                     backtest_metrics, differences, forecasters, no_backtest_line, prefixed, score, summary_lines,
                     trade)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Models:
    """The checkpoints under evaluation (local folders) and the name they are reported by; the
    published (predictor, tokenizer) pair compared with them on the test split, when there is one
    (folders or hub ids)."""
    predictor: Path
    tokenizer: Path
    label: str
    published: tuple[str, str] | None = None


@dataclass(frozen=True)
class Setup:
    """What both splits are forecast with: the settings, the checkpoints and the window of each
    sampling forecaster, the origins of both splits and the device."""
    settings: EvalConfig
    models: Models
    windows: dict[str, WindowSpec]
    val: SplitOrigins
    test: SplitOrigins
    device: str

    def checkpoints(self, forecaster: str) -> tuple[str | Path, str | Path]:
        return (self.models.predictor, self.models.tokenizer) if forecaster == MODEL else self.models.published


def prepare(settings: EvalConfig, models: Models, window: WindowSpec, data: DataSplits, device: str) -> Setup:
    """Both splits' origins and each forecaster's window, every setting refused before any forecast.
    ``window`` is the run's (its lookback: the history rows each origin holds; its horizon: the
    default ``pred_len``)."""
    pred_len = settings.pred_len or window.horizon
    val, test = (split_origins(settings, data, split, pred_len) for split in (VAL, TEST))
    B.backtest(test.trades, test.last, settings.backtest_k, settings.backtest_cost_bps)  # refuses bad settings
    if B.periods(test.trades) < B.MIN_PERIODS:
        log.warning("eval: %s", no_backtest_line(test))
    return Setup(settings, models, forecast_windows(models, test.lookback), val, test, device)


def forecast_windows(models: Models, history_rows: int) -> dict[str, WindowSpec]:
    """The window each sampling forecaster normalises with: the one recorded with its predictor
    checkpoint (published ones record none: the published defaults); the published weights see the
    evaluated model's lookback rows unless theirs says otherwise. A lookback longer than the
    ``history_rows`` each origin holds is refused."""
    model = WindowSpec.load(models.predictor)
    windows = {MODEL: model}
    if models.published is not None:
        published = WindowSpec.load(resolve_checkpoint_dir(models.published[0]))
        windows[PRETRAINED] = (dataclasses.replace(published, lookback=model.lookback)
                               if published.lookback is None else published)
    for name, w in windows.items():
        if w.lookback is not None and w.lookback > history_rows:
            who = models.label if name == MODEL else f"the published predictor {models.published[0]}"
            raise ConfigError(f"eval: {who} was trained on {w.lookback} rows of history (its window.json), but this "
                              f"run's windows hold data.lookback_window={history_rows}; set "
                              f"data.lookback_window={w.lookback} to evaluate it")
    return windows


def split_origins(settings: EvalConfig, data: DataSplits, split: str, pred_len: int) -> SplitOrigins:
    """At most ``eval.windows`` origins of a split, a horizon apart unless ``eval.overlap``."""
    windows = getattr(data, split)
    if len(windows) == 0:
        raise ConfigError(f"eval: the {split} split has no windows (data.{split}_ratio too small for "
                          "lookback_window + predict_window rows); nothing to evaluate on")
    series = range(len(windows.lengths))
    picked, lag = choose_origins([windows.origin_dates(k) for k in series], settings.windows, pred_len,
                                 bool(settings.overlap))
    chosen = [(int(k), int(s)) for k, s in picked]
    raws = np.stack([windows.raw(w) for w in chosen]).astype(np.float64)
    return SplitOrigins(split, chosen, raws, [windows.timestamps(w) for w in chosen],
                        [windows.series_name(w) for w in chosen], windows.lookback_window, pred_len, lag)


def choose(setup: Setup) -> Validation:
    """The validation split's scores: what ranks versions and searches, known before any test forecast."""
    forecasts = _forecast(setup, setup.val)
    scores, steps = score(forecasts, setup.val)
    return Validation(setup.val, forecasts, scores, steps, scores[setup.settings.metric])


def report(setup: Setup, validation: Validation) -> Evaluation:
    """The test split forecast by every forecaster, scored, compared with the model and traded."""
    e, test = setup.settings, setup.test
    forecasts = _forecast(setup, test)
    scores, steps = score(forecasts, test)
    references = {k: v for k, v in forecasts.items() if k != MODEL}
    comparisons = compare(e.metric, forecasts[MODEL], references, test.actual, test.last, test.dates)
    enough = B.periods(test.trades) >= B.MIN_PERIODS
    trades = trade(test, forecasts, e.backtest_k, e.backtest_cost_bps) if enough else {}
    trading = {name: r.metrics() for name, r in trades.items()}
    metrics = {**prefixed(VAL, validation.scores), **prefixed(TEST, {**scores, **backtest_metrics(trading)}),
               **differences(comparisons)}
    summary = summary_lines(e.metric, setup.val, validation.scores, test, scores, comparisons, setup.models.label)
    summary.append(backtest_line(trading, e.backtest_k, e.backtest_cost_bps) if enough else no_backtest_line(test))
    return Evaluation(setup.models.label, setup.windows, validation, test, forecasts, scores, steps, comparisons,
                      trades, metrics, summary)


def _forecast(setup: Setup, o: SplitOrigins) -> dict[str, Forecasts]:
    """Every forecaster of the split at its origins."""
    log.info("eval: forecasting %d %s origins x %d samples, %d steps, with %s", len(o.chosen), o.split,
             setup.settings.sample_count, o.pred_len, setup.models.label)
    out = {}
    for name in forecasters(o.split, setup.models.published is not None):
        if name in setup.windows:
            paths = _sample(setup, o, name)
            out[name] = Forecasts(paths.mean(axis=1), paths)
        else:
            out[name] = Forecasts(M.last_value_forecast(o.last, o.pred_len) if name == "last_value"
                                  else M.drift_forecast(o.history, o.pred_len))
    return out


def _sample(setup: Setup, o: SplitOrigins, forecaster: str) -> np.ndarray:
    """Sampled close paths [W, S, H]; every forecaster draws from the same seed."""
    e = setup.settings
    seed_everything(e.seed)
    predictor_dir, tokenizer_dir = setup.checkpoints(forecaster)
    predictor = KronosPredictor.from_window(Kronos.from_pretrained(predictor_dir),
                                            KronosTokenizer.from_pretrained(tokenizer_dir),
                                            setup.windows[forecaster], device=setup.device)
    frames = [pd.DataFrame(r[:o.lookback], columns=list(FEATURES)) for r in o.raws]
    x_ts = [pd.Series(s[:o.lookback]) for s in o.stamps]
    return sample_paths(predictor, frames, x_ts, o.y_timestamps, o.pred_len, e.T, e.top_k, e.top_p,
                        e.sample_count)[..., CLOSE]
