"""The eval step (conf/phases/eval.yaml): a measuring step, not a training phase, run on rank 0 alone.

It finds the checkpoints to evaluate (``eval.predictor``, else this run's predictor, else the
registered one this config gives), opens its phase run, has kronos_exp.evaluation forecast (plain
values in and out) and kronos_exp.tracking.evaluation record the outcome. The validation split
chooses (the registry's aliases of this data follow the validation score alone); the test split
only reports. Nothing in the registry changes until the evaluation has finished and been logged.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import ConfigError
from .evaluation import evaluate
from .evaluation.plots import figures
from .evaluation.report import reported_metrics
from .forecasting.package_layout import tokenizer_dir
from .model.checkpoint import CheckpointNotFound
from .runner import RunContext, TokenizerUnavailable, find_tokenizer
from .schemas import EvalConfig
from .tracking import RegisteredCheckpoint, fingerprint
from .tracking.evaluation import EvalRecord
from .tracking.fingerprint import checkpoint_digest
from .tracking.lifecycle import PhaseResult


class EvalStep:
    name = "eval"

    def __init__(self, settings: EvalConfig, published: tuple[str | None, str | None] = (None, None)):
        """``settings``: the eval section, resolved; ``published``: the (predictor, tokenizer) published
        pair compared with the evaluated model on the test split (``predictor.pretrained``, its tokenizer)."""
        self.settings, self.published = settings, published

    def reported_metrics(self) -> list[str]:
        return reported_metrics(self.settings, bool(self.published[0]))

    def report(self, result: PhaseResult) -> dict[str, float]:
        return {f"eval_{k}": v for k, v in result.metrics.items()}

    def measure(self, ctx: RunContext) -> PhaseResult:
        """Rank 0: locate the models, open the eval run, choose on validation, report on test, record."""
        if len(ctx.data.test) == 0:
            raise ConfigError("eval: the test split has no windows (data.test_ratio too small for "
                              "lookback_window + predict_window rows); nothing to evaluate")
        models, version = self._locate(ctx)
        setup = evaluate.prepare(self.settings, models, ctx.window, ctx.data, str(ctx.device))
        record = EvalRecord(ctx.runs.registry, version, self.settings, ctx.data_fingerprint, setup.test.pred_len,
                            ctx.data.summary)
        upstream = {"predictor_weights": checkpoint_digest(str(models.predictor)),
                    "tokenizer_weights": checkpoint_digest(str(models.tokenizer)), "evaluated": models.label}
        inputs = ctx.fingerprint_inputs(self.name, upstream, section=self.settings)
        with ctx.runs.open(self.name, inputs, dataclasses.asdict(self.settings), tags=upstream, claims=False):
            validation = evaluate.choose(setup)  # the choice: validation numbers only
            result = evaluate.report(setup, validation)
            record.log(result.metrics, result.steps_by_split, result.tags, result.table,
                       figures(result, self.settings), result.paths)
            # Only a finished evaluation touches the registry, the alias last.
            record.report_on_version(result.scores[self.settings.metric], result.verdicts)
            record.rank(validation.headline)
        return PhaseResult(self.name, models.predictor, fingerprint(inputs), result.headline, version, skipped=False,
                           metrics=result.metrics, tags=result.verdicts, summary=result.summary)

    # -- which checkpoints ----------------------------------------------------------------
    def _locate(self, ctx: RunContext) -> tuple[evaluate.Models, RegisteredCheckpoint | None]:
        """eval.predictor, else this run's predictor, else the registered one whose fingerprint
        this config gives (on the tokenizer the predictor phase would find)."""
        if self.settings.predictor:
            version, folder = _download(ctx, self.settings.predictor)
            label = version.label if version else str(folder)
        elif "predictor" in ctx.results:
            r = ctx.results["predictor"]
            folder, version, label = r.checkpoint_dir, r.version, r.version.label if r.version else "this run"
        else:
            version, folder = _registered_predictor(ctx)
            label = version.label
        published = self.published if self.published[0] else None
        return evaluate.Models(folder, self._tokenizer_for(ctx, folder, version), label, published), version

    def _tokenizer_for(self, ctx: RunContext, predictor: Path, version: RegisteredCheckpoint | None) -> Path:
        if self.settings.tokenizer:
            return _download(ctx, self.settings.tokenizer)[1]
        if tokenizer_dir(predictor).is_dir():  # packaged with the predictor version
            return tokenizer_dir(predictor)
        if "tokenizer" in ctx.results:
            return ctx.results["tokenizer"].checkpoint_dir
        if version is not None and "tokenizer_version" in version.tags:
            return _download(ctx, f"models:/{version.tags['tokenizer_version']}")[1]
        if ctx.sections["tokenizer"].pretrained:
            return Path(ctx.sections["tokenizer"].pretrained)
        raise CheckpointNotFound(f"eval: the predictor {predictor} comes without a tokenizer; set "
                                 "eval.tokenizer=<folder or models:/ URI>")


def _download(ctx: RunContext, uri: str) -> tuple[RegisteredCheckpoint | None, Path]:
    """(version, local folder) of a ``models:/name/version`` / ``models:/name@alias`` URI; (None,
    the folder) for a folder path: the registry's own order."""
    if not uri.startswith("models:/"):
        return None, Path(uri)
    try:
        return ctx.runs.registry.download(uri, ctx.output_dir / "eval_models")
    except CheckpointNotFound as err:
        raise CheckpointNotFound(f"eval: {err}") from None


def _registered_predictor(ctx: RunContext) -> tuple[RegisteredCheckpoint, Path]:
    name = ctx.model_names["predictor"]
    try:
        tokenizer_fp = find_tokenizer(ctx).tags["tokenizer_fingerprint"]
        fp = fingerprint(ctx.fingerprint_inputs("predictor", {"tokenizer_fingerprint": tokenizer_fp}))
    except TokenizerUnavailable:  # no tokenizer for this config: no predictor trained on it either
        fp = None
    hit = fp and ctx.runs.registry.fetch(name, fp, ctx.output_dir / "reused")
    if not hit:
        raise CheckpointNotFound(
            f"eval: no predictor to evaluate: this run trained none, and the registry ('{name}' at "
            f"{ctx.tracker.tracking_uri}) holds none for this data and config"
            f"{f' (fingerprint {fp[:12]})' if fp else ''}. Run phases=all, or set "
            "eval.predictor=models:/<name>/<version> or a checkpoint folder")
    return hit
