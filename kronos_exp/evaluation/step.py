"""The eval step: forecasts that choose on the validation split and report on the test split.

Forecast origins (evaluation.origins) of the validation split give the numbers that select: the
``eval.alias`` the registry moves to the best version and the default objective of ``phases=all``
(``eval_val_<eval.metric>``). Only then is the test split forecast, for the report: every metric
beside the last-value and drift baselines and, when ``predictor.pretrained`` is set, the published
weights with their own tokenizer; the model's difference from each with a bootstrap interval and a
verdict (evaluation.comparisons). No test number feeds a choice. Each origin is forecast
``eval.sample_count`` times from its lookback rows, every forecaster from the same seed.
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
from ..tracking.plots import log_equity_curves, log_fan_charts, log_metrics_by_horizon
from ..metric_names import ERROR_METRICS, POINT_METRICS, SAMPLE_METRICS, SCORE_METRICS, ranking_value
from . import backtest as B
from . import metrics as M
from .comparisons import Forecasts, compare
from .intervals import METHOD
from .origins import choose_origins
from .report import (BASELINES, CLOSE, MODEL, PRETRAINED, TEST, VAL, SplitOrigins, backtest_line, backtest_metrics,
                     differences, fan_chart_windows, metric_name, prefixed, score, summary_lines, trade)

log = logging.getLogger(__name__)

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
    def forecasters(cfg: DictConfig, split: str) -> list[str]:
        """Who forecasts a split: the pretrained weights only report (on test), they choose nothing."""
        pretrained = [PRETRAINED] if cfg.predictor.pretrained and split == TEST else []
        return [MODEL, *pretrained, *BASELINES]

    def check(self, cfg: DictConfig) -> None:
        e = cfg.eval
        if cfg.data.get("test_ratio", 1) == 0:
            raise ConfigError("eval: there is no test split (data.test_ratio=0), so there is nothing to report "
                              "on; set data.test_ratio > 0 (e.g. 0.1) or leave the eval phase out (phases=both)")
        if cfg.predictor.pretrained and not cfg.tokenizer.pretrained:
            raise ConfigError(
                f"eval: predictor.pretrained={cfg.predictor.pretrained} is compared with the fine-tuned model, but "
                "tokenizer.pretrained is null: the published predictor only reads the codes of the tokenizer "
                "published with it, so pairing it with this run's tokenizer would not be a fair comparison. Set "
                "tokenizer.pretrained to that tokenizer (e.g. NeoQuasar/Kronos-Tokenizer-base for Kronos-small)")
        if not 1 <= self.pred_len(cfg) <= cfg.data.predict_window:
            raise ConfigError(f"eval.pred_len={e.pred_len} but windows hold data.predict_window="
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
        names = []
        for split in (VAL, TEST):
            for forecaster in self.forecasters(cfg, split):
                names += [f"eval_{split}_{metric_name(forecaster, m)}" for m in base]
                if forecaster != "last_value":
                    names += [f"eval_{split}_{metric_name(forecaster, m)}_skill" for m in ERROR_METRICS if m in base]
                if forecaster not in BASELINES:  # excess over drift: not for drift itself
                    names += [f"eval_{split}_{metric_name(forecaster, m)}_excess" for m in SCORE_METRICS]
        for reference in self.forecasters(cfg, TEST)[1:]:
            difference = f"eval_{TEST}_{cfg.eval.metric}_vs_{reference}"
            names += [difference, f"{difference}_low", f"{difference}_high"]
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

    def _origins(self, ctx: RunContext, split: str) -> SplitOrigins:
        """At most ``eval.windows`` origins of a split, a horizon apart unless ``eval.overlap``."""
        windows, e = getattr(ctx.data, split), ctx.cfg.eval
        if len(windows) == 0:
            raise ConfigError(f"eval: the {split} split has no windows (data.{split}_ratio too small for "
                              "lookback_window + predict_window rows); nothing to evaluate on")
        pred_len = self.pred_len(ctx.cfg)
        starts = [windows.starts(k) for k in range(len(windows.lengths))]
        chosen = [(int(k), int(s)) for k, s in choose_origins(starts, e.windows, pred_len, bool(e.overlap))]
        raws = np.stack([windows.raw(w) for w in chosen]).astype(np.float64)
        return SplitOrigins(split, chosen, raws, [windows.timestamps(w) for w in chosen],
                            [windows.series_name(w) for w in chosen], windows.lookback_window, pred_len)

    def _sample(self, ctx: RunContext, o: SplitOrigins, predictor_dir: Path, tokenizer_path: Path) -> np.ndarray:
        """Sampled close paths [W, S, H]; every model draws from the same seed."""
        e = ctx.cfg.eval
        seed_everything(e.seed if e.seed is not None else ctx.cfg.seed)
        predictor = KronosPredictor(Kronos.from_pretrained(predictor_dir), KronosTokenizer.from_pretrained(
            tokenizer_path), device=str(ctx.device), max_context=ctx.cfg.predictor.max_context)
        frames = [pd.DataFrame(r[:o.lookback], columns=list(FEATURES)) for r in o.raws]
        x_ts = [pd.Series(s[:o.lookback]) for s in o.stamps]
        return sample_paths(predictor, frames, x_ts, o.y_timestamps, o.pred_len, e.T, e.top_k, e.top_p,
                            e.sample_count)[..., CLOSE]

    def _forecast(self, ctx: RunContext, o: SplitOrigins, models: Models) -> dict[str, Forecasts]:
        """Every forecaster of the split at its origins."""
        log.info("eval: forecasting %d %s origins x %d samples, %d steps, with %s", len(o.chosen), o.split,
                 ctx.cfg.eval.sample_count, o.pred_len, models.label)
        out = {}
        for name in self.forecasters(ctx.cfg, o.split):
            if name == MODEL:
                paths = self._sample(ctx, o, models.predictor, models.tokenizer)
            elif name == PRETRAINED:
                paths = self._sample(ctx, o, Path(str(ctx.cfg.predictor.pretrained)),
                                     Path(str(ctx.cfg.tokenizer.pretrained)))
            else:
                point = (M.last_value_forecast(o.last, o.pred_len) if name == "last_value"
                         else M.drift_forecast(o.history, o.pred_len))
                out[name] = Forecasts(point)
                continue
            out[name] = Forecasts(paths.mean(axis=1), paths)
        return out

    def _evaluate(self, ctx: RunContext, models: Models, fp: str) -> PhaseResult:
        e = ctx.cfg.eval
        val, test = self._origins(ctx, VAL), self._origins(ctx, TEST)
        B.backtest(test.trades, test.last, e.backtest_k, e.backtest_cost_bps)  # settings refused before any work
        chooser, chooser_steps = score(self._forecast(ctx, val, models), val)
        headline = chooser[e.metric]
        self._rank(ctx, models, headline)  # chosen before the test split is forecast
        forecasts = self._forecast(ctx, test, models)
        report, steps = score(forecasts, test)
        references = {k: v for k, v in forecasts.items() if k != MODEL}
        comparisons = compare(e.metric, forecasts[MODEL], references, test.actual, test.last,
                              seed=e.seed if e.seed is not None else ctx.cfg.seed)
        trades = trade(test, forecasts, e.backtest_k, e.backtest_cost_bps)
        trading = {name: r.metrics() for name, r in trades.items()}
        metrics = {**prefixed(VAL, chooser), **prefixed(TEST, {**report, **backtest_metrics(trading)}),
                   **differences(e.metric, comparisons)}
        self._log(ctx, models, metrics, {VAL: chooser_steps, TEST: steps}, val, test, forecasts)
        log_equity_curves({name: (r.times, r.equity) for name, r in trades.items()},
                          f"{models.label}: test backtest, k={e.backtest_k}, {e.backtest_cost_bps:g} bp per turnover")
        self._report_on_version(ctx, models, report[e.metric], comparisons)
        summary = summary_lines(e.metric, val, chooser, test, report, comparisons, models.label) + [
            backtest_line(trading, e.backtest_k, e.backtest_cost_bps)]
        return PhaseResult(self.name, models.predictor, fp, headline, models.version, skipped=False,
                           metrics=metrics, tags={f"verdict_vs_{c.reference}": c.verdict for c in comparisons},
                           summary=summary)

    def _log(self, ctx: RunContext, models: Models, metrics: dict[str, float], steps: dict[str, dict],
             val: SplitOrigins, test: SplitOrigins, forecasts: dict[str, Forecasts]) -> None:
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        for split, by_step in steps.items():
            for h in range(test.pred_len):
                mlflow.log_metrics({f"{split}_{k}_by_step": float(v[h]) for k, v in by_step.items()
                                    if math.isfinite(v[h])}, step=h + 1)
        mlflow.set_tags({"evaluated": models.label, "eval_origins": f"val {len(val.chosen)}, test {len(test.chosen)}",
                         "eval_intervals": METHOD})
        _log_forecasts(test, forecasts)
        log_fan_charts(fan_chart_windows(test, ctx.cfg.eval.plot_series), test.stamps, test.raws[..., CLOSE],
                       test.lookback, test.pred_len, forecasts[MODEL].paths, forecasts["last_value"].point,
                       test.names, models.label,
                       pretrained_paths=forecasts[PRETRAINED].paths if PRETRAINED in forecasts else None)
        log_metrics_by_horizon(steps[TEST], list(forecasts))

    def _setup_key(self, ctx: RunContext, split: str) -> str:
        setup = eval_setup_fingerprint(ctx.cfg, ctx.data_fingerprint, self.pred_len(ctx.cfg))[:12]
        return f"eval_{split}_{ctx.cfg.eval.metric}.{setup}"

    def _rank(self, ctx: RunContext, models: Models, headline: float) -> None:
        """Tag the predictor version with its validation score for this data + eval setup and point
        ``eval.alias`` at the best-scoring version of that setup (a band's coverage: the closest to 0.8)."""
        alias, version, metric = ctx.cfg.eval.alias, models.version, ctx.cfg.eval.metric
        if version is None or not math.isfinite(headline):
            return
        best = ctx.runs.registry.rank(version, self._setup_key(ctx, VAL), headline, alias,
                                      badness=lambda score: ranking_value(metric, score))
        if best is not None:
            best_version, best_score = best
            mlflow.set_tag("alias", f"{version.name}@{alias} -> v{best_version}")
            log.info("eval: %s@%s -> v%d (validation %s %.5g on this data and eval setup)", version.name, alias,
                     best_version, metric, best_score)

    def _report_on_version(self, ctx: RunContext, models: Models, value: float, comparisons: list) -> None:
        """The test report on the predictor version, beside (never inside) the score that ranks it."""
        if models.version is None:
            return
        tags = {self._setup_key(ctx, TEST): repr(value),
                **{f"eval_verdict_vs_{c.reference}": c.verdict for c in comparisons}}
        ctx.runs.registry.tag(models.version, tags)


def _log_forecasts(o: SplitOrigins, forecasts: dict[str, Forecasts]) -> None:
    """forecasts.csv: one row per test origin, step and forecaster (point, and the band when sampled)."""
    rows = []
    for k in range(len(o.chosen)):
        for h, ts in enumerate(o.y_timestamps[k]):
            for name, f in forecasts.items():
                row = {"origin": k, "series": o.names[k], "step": h + 1, "timestamp": str(ts),
                       "forecaster": name, "actual_close": o.actual[k, h], "close": f.point[k, h]}
                if f.paths is not None and f.paths.shape[1] > 1:
                    row["close_q10"], row["close_q90"] = np.quantile(f.paths[k, :, h], M.BAND)
                rows.append(row)
    mlflow.log_text(pd.DataFrame(rows).to_csv(index=False), "forecasts.csv")
