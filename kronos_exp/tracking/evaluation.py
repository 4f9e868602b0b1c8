"""An evaluation's record, on rank 0: its numbers, tags, forecasts table and figures on the active
(eval phase) run, and in the registry the evaluated version's scores, verdicts and the aliases that
point at the best-scoring version of its data.

It is handed plain values (kronos_exp.eval_step takes them from kronos_exp.evaluation), so
tracking imports nothing of the evaluation, which forecasts through kronos_exp.forecasting.

A version is ranked by its validation score under a key that names the data and the eval setup
(``eval_val_<metric>.<setup>``): scores of different data or settings are never compared. So each
data set has its own alias, ``<eval.alias>-<data key>`` (``best-3f9a0c1b2d4e``), and ``eval.alias``
itself stands for one data set, the first ranked (tracking.registry ``Registry.rank``). The test
report goes beside it (``eval_test_<metric>.<setup>``), never into the ranking.
"""
from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Mapping

import mlflow
import numpy as np
import pandas as pd

from ..metric_names import ranking_value
from ..schemas import EvalConfig
from .fingerprint import eval_setup_fingerprint
from .plots import log_figure
from .registry import RegisteredCheckpoint, Registry, data_key

log = logging.getLogger(__name__)

FORECASTS_ARTIFACT = "forecasts.csv"
SAMPLE_PATHS_ARTIFACT = "sample_paths.npz"  # <split>_<forecaster>: sampled closes [origins, samples, steps]


def data_description(summary: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """A data set in words, for whoever picks its alias: files, series and dates, window and splits
    (``summary``: the data's, ``settings``: the data settings its fingerprint holds)."""
    files = ", ".join(summary["files"][:2]) + (f" (+{summary['n_files'] - 2} more)" if summary["n_files"] > 2 else "")
    return (f"{files}: {summary['n_series']} series {summary['start']} .. {summary['end']}; lookback "
            f"{settings['lookback_window']} + predict {settings['predict_window']}; train/val/test "
            f"{settings['train_ratio']}/{settings['val_ratio']}/{settings['test_ratio']}")


class EvalRecord:
    """Where one evaluation of ``version`` (None: an unregistered folder, so nothing to rank or tag)
    with ``settings`` (resolved) on data ``data_fingerprint`` (``data_summary``: its files, series and
    dates) forecasting ``pred_len`` steps goes."""

    def __init__(self, registry: Registry, version: RegisteredCheckpoint | None, settings: EvalConfig,
                 data_fingerprint: Mapping[str, Any], pred_len: int, data_summary: Mapping[str, Any]):
        self.registry, self.version, self.settings, self.pred_len = registry, version, settings, pred_len
        self.setup = eval_setup_fingerprint(settings, data_fingerprint, pred_len)[:12]
        self.data = data_key(data_fingerprint)
        self.description = data_description(data_summary, data_fingerprint["config"])

    def key(self, split: str) -> str:
        """``eval_<split>_<metric>.<setup>``: the registry tag of a score on this data and eval setup."""
        return f"eval_{split}_{self.settings.metric}.{self.setup}"

    def rank(self, headline: float) -> None:
        """Tag the version with its validation score and point this data's alias (``eval.alias`` too,
        while it stands for this data) at the best-scoring version of this setup (a band's coverage: the
        closest to 0.8); the move is tagged on the active run."""
        alias, version, metric = self.settings.alias, self.version, self.settings.metric
        if version is None or not math.isfinite(headline):
            return
        ranked = self.registry.rank(version, self.key("val"), headline, alias,
                                    badness=lambda score: ranking_value(metric, score), data=self.data,
                                    description=self.description)
        if ranked is None:
            return
        moved = f"{version.name}@" + " and @".join(ranked.moved)
        mlflow.set_tag("alias", f"{moved} -> v{ranked.version}")
        kept = "" if alias in ranked.moved else f"; @{alias} is the best of other data and stays"
        log.info("eval: %s -> v%d (validation %s %.5g on this data and eval setup)%s", moved, ranked.version, metric,
                 ranked.score, kept)

    def log(self, metrics: dict[str, float], steps: dict[str, dict[str, np.ndarray]], tags: dict[str, str],
            forecasts: pd.DataFrame, figures: dict[str, Any], paths: dict[str, np.ndarray]) -> None:
        """On the active run: the metrics (finite ones), each split's metrics by horizon step
        (``<split>_<name>_by_step`` at steps 1..pred_len), the tags, forecasts.csv, the sample paths
        (sample_paths.npz, compressed numpy arrays: read with ``numpy.load``) and the figures."""
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        for split, by_step in steps.items():
            for h in range(self.pred_len):
                mlflow.log_metrics({f"{split}_{k}_by_step": float(v[h]) for k, v in by_step.items()
                                    if math.isfinite(v[h])}, step=h + 1)
        mlflow.set_tags(tags)
        mlflow.log_text(forecasts.to_csv(index=False), FORECASTS_ARTIFACT)
        if paths:
            with tempfile.TemporaryDirectory() as folder:
                np.savez_compressed(Path(folder, SAMPLE_PATHS_ARTIFACT), **paths)
                mlflow.log_artifact(str(Path(folder, SAMPLE_PATHS_ARTIFACT)))
        for name, fig in figures.items():
            log_figure(fig, name)

    def report_on_version(self, value: float, verdicts: dict[str, str]) -> None:
        """The test report on the version, beside (never inside) the score that ranks it; ``verdicts``
        as ``verdict_vs_<reference>`` become ``eval_verdict_vs_<reference>``."""
        if self.version is None:
            return
        tags = {self.key("test"): repr(value), **{f"eval_{k}": v for k, v in verdicts.items()}}
        self.registry.tag(self.version, tags)
