"""The eval step: rolling-origin forecasts over the test split, against baselines that need no model.

Its "training" is forecasting: ``eval.windows`` evenly spaced test windows (never seen in training
or model selection) are forecast ``eval.sample_count`` times each from their lookback rows, and
compared in price units with what happened, beside the last-value and drift baselines and, when
``predictor.pretrained`` is set, the pretrained weights before fine-tuning. Nothing is trained or
registered; the predictor version gets its score as a tag, and the ``eval.alias`` goes to the best.
It is a measuring step, not a training phase: it runs on rank 0 alone, in its own phase run.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..data import FEATURES
from ..errors import ConfigError
from ..forecasting import KronosPredictor, sample_paths
from ..forecasting.pyfunc import tokenizer_dir
from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import CheckpointNotFound
from ..runner import RunContext, TokenizerUnavailable, find_tokenizer, seed_everything
from ..tracking import RegisteredCheckpoint, fingerprint
from ..tracking.fingerprint import checkpoint_digest, eval_setup_fingerprint
from ..tracking.lifecycle import PhaseResult
from ..tracking.plots import log_fan_charts, log_metrics_by_horizon
from ..metric_names import ACTUAL_FACTS, ERROR_METRICS, POINT_METRICS, SAMPLE_METRICS, SCORE_METRICS, maximised
from . import metrics as M

log = logging.getLogger(__name__)

CLOSE = FEATURES.index("close")
MODEL = "model"  # the evaluated (fine-tuned) predictor: its metrics carry no prefix
BASELINES = ("last_value", "drift")
PRETRAINED = "pretrained"


def metric_name(forecaster: str, metric: str) -> str:
    """``close_mae`` for the evaluated model, ``last_value_close_mae`` for the others."""
    return metric if forecaster == MODEL else f"{forecaster}_{metric}"


@dataclass
class TestWindows:
    """The chosen test windows, in price units: their rows, timestamps and what happened."""
    chosen: np.ndarray  # window indices into the test split
    raws: np.ndarray  # [W, L+P, 6]
    stamps: list
    lookback: int
    pred_len: int

    @property
    def actual(self) -> np.ndarray:
        return self.raws[:, self.lookback:self.lookback + self.pred_len, CLOSE]

    @property
    def history(self) -> np.ndarray:
        return self.raws[:, :self.lookback, CLOSE]

    @property
    def y_timestamps(self) -> list[pd.Series]:
        return [pd.Series(s[self.lookback:self.lookback + self.pred_len]) for s in self.stamps]


@dataclass
class Models:
    """The checkpoints under evaluation and where they came from."""
    predictor: Path
    tokenizer: Path
    version: RegisteredCheckpoint | None
    label: str


class EvalStep:
    name = "eval"

    def __init__(self) -> None:
        self._models: Models | None = None

    # -- settings ------------------------------------------------------------------------
    @staticmethod
    def pred_len(cfg: DictConfig) -> int:
        return int(cfg.eval.pred_len or cfg.data.predict_window)

    @staticmethod
    def forecasters(cfg: DictConfig) -> list[str]:
        return [MODEL] + ([PRETRAINED] if cfg.predictor.pretrained else []) + list(BASELINES)

    def check(self, cfg: DictConfig) -> None:
        e = cfg.eval
        if cfg.data.get("test_ratio", 1) == 0:
            raise ConfigError("eval: there is no test split (data.test_ratio=0), so there is nothing to evaluate "
                              "on; set data.test_ratio > 0 (e.g. 0.1) or leave the eval phase out (phases=both)")
        if not 1 <= self.pred_len(cfg) <= cfg.data.predict_window:
            raise ConfigError(f"eval.pred_len={e.pred_len} but test windows hold data.predict_window="
                              f"{cfg.data.predict_window} future rows; use 1..{cfg.data.predict_window} or null")
        for key, low in (("windows", 1), ("sample_count", 1), ("plot_series", 0)):
            if e[key] < low:
                raise ConfigError(f"eval.{key}={e[key]} must be >= {low}")
        if not (e.T > 0 and 0 < e.top_p <= 1 and e.top_k >= 0):
            raise ConfigError(f"eval.T={e.T}, eval.top_p={e.top_p}, eval.top_k={e.top_k}: need T > 0, "
                              "0 < top_p <= 1, top_k >= 0")
        known = POINT_METRICS + (SAMPLE_METRICS if e.sample_count > 1 else ())
        if e.metric not in known:
            raise ConfigError(f"eval.metric={e.metric} is not one of {', '.join(known)} "
                              "(crps and coverage_10_90 need eval.sample_count > 1)")

    def reported_metrics(self, cfg: DictConfig) -> list[str]:
        base = POINT_METRICS + (SAMPLE_METRICS if cfg.eval.sample_count > 1 else ())
        names = [f"eval_{cfg.eval.metric}"]
        for forecaster in self.forecasters(cfg):
            names += [f"eval_{metric_name(forecaster, m)}" for m in base]
            if forecaster != "last_value":
                names += [f"eval_{metric_name(forecaster, m)}_skill" for m in ERROR_METRICS if m in base]
            if forecaster not in BASELINES:  # excess over drift: not for drift itself
                names += [f"eval_{metric_name(forecaster, m)}_excess" for m in SCORE_METRICS]
        return list(dict.fromkeys(names))

    def report(self, result: PhaseResult) -> dict[str, float]:
        return {f"eval_{k}": v for k, v in result.metrics.items()}

    # -- which checkpoints ----------------------------------------------------------------
    def _download(self, ctx: RunContext, uri: str) -> tuple[Path, RegisteredCheckpoint | None]:
        """A local folder for a folder path or a ``models:/name/version`` / ``models:/name@alias`` URI."""
        if not uri.startswith("models:/"):
            return Path(uri), None
        try:
            return ctx.runs.registry.download(uri, ctx.output_dir / "eval_models")
        except CheckpointNotFound as err:
            raise CheckpointNotFound(f"eval: {err}") from None

    def _locate(self, ctx: RunContext) -> Models:
        """eval.predictor, else this run's predictor, else the registered one whose fingerprint
        this config gives (on the tokenizer the predictor phase would find)."""
        if self._models is not None:
            return self._models
        if ctx.cfg.eval.predictor:
            folder, version = self._download(ctx, str(ctx.cfg.eval.predictor))
            label = version.label if version else str(folder)
        elif "predictor" in ctx.results:
            r = ctx.results["predictor"]
            folder, version, label = r.checkpoint_dir, r.version, r.version.label if r.version else "this run"
        else:
            version, folder = self._registered_predictor(ctx)
            label = version.label
        self._models = Models(folder, self._tokenizer_for(ctx, folder, version), version, label)
        return self._models

    def _registered_predictor(self, ctx: RunContext) -> tuple[RegisteredCheckpoint, Path]:
        try:
            tokenizer_fp = find_tokenizer(ctx).tags["tokenizer_fingerprint"]
            fp = fingerprint(ctx.fingerprint_inputs("predictor", {"tokenizer_fingerprint": tokenizer_fp}))
        except TokenizerUnavailable:  # no tokenizer for this config: no predictor trained on it either
            fp = None
        hit = fp and ctx.runs.registry.fetch(ctx.model_name("predictor"), fp, ctx.output_dir / "reused")
        if not hit:
            raise CheckpointNotFound(
                f"eval: no predictor to evaluate: this run trained none, and the registry "
                f"('{ctx.model_name('predictor')}' at {ctx.tracker.tracking_uri}) holds none for this "
                f"data and config{f' (fingerprint {fp[:12]})' if fp else ''}. Run phases=all, or set "
                "eval.predictor=models:/<name>/<version> or a checkpoint folder")
        return hit

    def _tokenizer_for(self, ctx: RunContext, predictor: Path, version: RegisteredCheckpoint | None) -> Path:
        e = ctx.cfg.eval
        if e.tokenizer:
            return self._download(ctx, str(e.tokenizer))[0]
        if tokenizer_dir(predictor).is_dir():  # packaged with the predictor version
            return tokenizer_dir(predictor)
        if "tokenizer" in ctx.results:
            return ctx.results["tokenizer"].checkpoint_dir
        if version is not None and "tokenizer_version" in version.tags:
            return self._download(ctx, f"models:/{version.tags['tokenizer_version']}")[0]
        if ctx.cfg.tokenizer.pretrained:
            return Path(str(ctx.cfg.tokenizer.pretrained))
        raise CheckpointNotFound(f"eval: the predictor {predictor} comes without a tokenizer; set "
                                 "eval.tokenizer=<folder or models:/ URI>")

    # -- the work ----------------------------------------------------------------------------
    def measure(self, ctx: RunContext) -> PhaseResult:
        """Rank 0: locate the models, open the eval run, forecast, score, log and rank."""
        if len(ctx.data.test) == 0:
            raise ConfigError("eval: the test split has no windows (data.test_ratio too small for "
                              "lookback_window + predict_window rows); nothing to evaluate")
        models = self._locate(ctx)
        upstream = {"predictor_weights": checkpoint_digest(str(models.predictor)),
                    "tokenizer_weights": checkpoint_digest(str(models.tokenizer)), "evaluated": models.label}
        inputs = ctx.fingerprint_inputs(self.name, upstream)
        settings = OmegaConf.to_container(ctx.cfg.eval, resolve=True)
        with ctx.runs.open(self.name, inputs, settings, tags=upstream, claims=False):
            return self._evaluate(ctx, models, fingerprint(inputs))

    def _test_windows(self, ctx: RunContext) -> TestWindows:
        """``eval.windows`` evenly spaced test windows."""
        test, n = ctx.data.test, min(ctx.cfg.eval.windows, len(ctx.data.test))
        chosen = (np.arange(n) * len(test)) // n
        raws = np.stack([test.raw(int(i)) for i in chosen]).astype(np.float64)
        return TestWindows(chosen, raws, [test.timestamps(int(i)) for i in chosen], test.lookback_window,
                           self.pred_len(ctx.cfg))

    def _forecast(self, ctx: RunContext, w: TestWindows, predictor_dir: Path, tokenizer_path: Path) -> np.ndarray:
        """Sampled close paths [W, S, H]; every model draws from the same seed."""
        e = ctx.cfg.eval
        seed_everything(e.seed if e.seed is not None else ctx.cfg.seed)
        predictor = KronosPredictor(Kronos.from_pretrained(predictor_dir), KronosTokenizer.from_pretrained(
            tokenizer_path), device=str(ctx.device), max_context=ctx.cfg.predictor.max_context)
        frames = [pd.DataFrame(r[:w.lookback], columns=list(FEATURES)) for r in w.raws]
        x_ts = [pd.Series(s[:w.lookback]) for s in w.stamps]
        return sample_paths(predictor, frames, x_ts, w.y_timestamps, w.pred_len, e.T, e.top_k, e.top_p,
                            e.sample_count)[..., CLOSE]

    def _evaluate(self, ctx: RunContext, models: Models, fp: str) -> PhaseResult:
        e, w = ctx.cfg.eval, self._test_windows(ctx)
        log.info("eval: forecasting %d test windows x %d samples, %d steps, with %s", len(w.chosen), e.sample_count,
                 w.pred_len, models.label)
        paths = {MODEL: self._forecast(ctx, w, models.predictor, models.tokenizer)}
        if ctx.cfg.predictor.pretrained:
            paths[PRETRAINED] = self._forecast(ctx, w, Path(str(ctx.cfg.predictor.pretrained)),
                                               Path(str(ctx.cfg.tokenizer.pretrained or models.tokenizer)))
        points = {name: p.mean(axis=1) for name, p in paths.items()}
        points["last_value"] = M.last_value_forecast(w.history[:, -1], w.pred_len)
        points["drift"] = M.drift_forecast(w.history, w.pred_len)
        overall, steps = _score(points, paths, w.actual, w.history[:, -1])
        self._log(ctx, w, models, overall, steps, paths, points)
        headline = overall[e.metric]
        self._rank(ctx, models, headline)
        log.info("eval: %s %.5g (last value %.5g, drift %.5g)%s", e.metric, headline,
                 overall[metric_name("last_value", e.metric)], overall[metric_name("drift", e.metric)],
                 f", pretrained {overall[metric_name(PRETRAINED, e.metric)]:.5g}" if PRETRAINED in points else "")
        return PhaseResult(self.name, models.predictor, fp, headline, models.version, skipped=False,
                           metrics={e.metric: headline, **{k: v for k, v in overall.items() if k.startswith(e.metric)},
                                    **overall})

    def _log(self, ctx: RunContext, w: TestWindows, models: Models, overall, steps, paths, points) -> None:
        test = ctx.data.test
        mlflow.log_metrics({k: v for k, v in overall.items() if math.isfinite(v)})
        for h in range(w.pred_len):
            mlflow.log_metrics({f"{k}_by_step": float(v[h]) for k, v in steps.items() if math.isfinite(v[h])},
                               step=h + 1)
        mlflow.set_tags({"evaluated": models.label, "eval_windows": str(len(w.chosen))})
        _log_forecasts(w, test, paths, points)
        log_fan_charts(_fan_chart_windows(test, w.chosen, ctx.cfg.eval.plot_series), w.stamps, w.raws[..., CLOSE],
                       w.lookback, w.pred_len, paths[MODEL], points["last_value"],
                       [test.series_name(int(i)) for i in w.chosen], models.label)
        log_metrics_by_horizon(steps, list(points))

    def _rank(self, ctx: RunContext, models: Models, headline: float) -> None:
        """Tag the predictor version with its score for this data + eval setup and point
        ``eval.alias`` at the best-scoring version of that setup (lower is better for error metrics)."""
        alias, version, metric = ctx.cfg.eval.alias, models.version, ctx.cfg.eval.metric
        if version is None or not math.isfinite(headline):
            return
        key = f"eval_{metric}.{eval_setup_fingerprint(ctx.cfg, ctx.data_fingerprint, self.pred_len(ctx.cfg))[:12]}"
        best = ctx.runs.registry.rank(version, key, headline, alias, lower_better=not maximised(metric))
        if best is not None:
            best_version, best_score = best
            mlflow.set_tag("alias", f"{version.name}@{alias} -> v{best_version}")
            log.info("eval: %s@%s -> v%d (%s %.5g on this data and eval setup)", version.name, alias, best_version,
                     metric, best_score)


def _score(points: dict[str, np.ndarray], paths: dict[str, np.ndarray], actual: np.ndarray,
           last: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every forecaster's metrics over all steps and by step, error skills against the last value and
    score excesses against drift; the facts about the actuals once, unprefixed."""
    overall, steps = {}, {}
    for name, point in points.items():
        sampled = paths.get(name)
        for metric, value in M.overall(point, actual, last, sampled).items():
            if name == MODEL or metric not in ACTUAL_FACTS:
                overall[metric_name(name, metric)] = value
        for metric, values in M.by_step(point, actual, last, sampled).items():
            if name == MODEL or metric not in ACTUAL_FACTS:
                steps[metric_name(name, metric)] = values
    last_value, drift = ({m: overall[metric_name(b, m)] for m in POINT_METRICS} for b in BASELINES)
    for name in points:
        if name == "last_value":
            continue
        own = {m: overall[metric_name(name, m)] for m in POINT_METRICS + SAMPLE_METRICS
               if metric_name(name, m) in overall}
        against = None if name == "drift" else drift  # drift's excess over itself would be 0 by definition
        overall.update({metric_name(name, k): v for k, v in M.skill(own, last_value, against).items()})
    return overall, steps


def _fan_chart_windows(test, chosen: np.ndarray, limit: int) -> list[int]:
    """Positions in ``chosen`` of the middle window of each of the first ``limit`` series."""
    by_series: dict[str, list[int]] = {}
    for pos, i in enumerate(chosen):
        by_series.setdefault(test.series_name(int(i)), []).append(pos)
    return [positions[len(positions) // 2] for positions in list(by_series.values())[:limit]]


def _log_forecasts(w: TestWindows, test, paths, points) -> None:
    """forecasts.csv: one row per window, step and forecaster (point, and the band when sampled)."""
    rows = []
    for k, i in enumerate(w.chosen):
        for h, ts in enumerate(w.y_timestamps[k]):
            for name, point in points.items():
                row = {"window": int(i), "series": test.series_name(int(i)), "step": h + 1, "timestamp": str(ts),
                       "forecaster": name, "actual_close": w.actual[k, h], "close": point[k, h]}
                if name in paths and paths[name].shape[1] > 1:
                    row["close_q10"], row["close_q90"] = np.quantile(paths[name][k, :, h], M.BAND)
                rows.append(row)
    mlflow.log_text(pd.DataFrame(rows).to_csv(index=False), "forecasts.csv")
