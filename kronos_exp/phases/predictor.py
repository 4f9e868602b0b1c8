"""Phase 2: fine-tune the predictor on next-token cross-entropy, tokenizer frozen."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import bits_advice
from ..errors import ConfigError, UserError
from ..forecasting import pyfunc as serving
from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import resolve_checkpoint_dir
from ..model.losses import predictor_loss
from ..tracking import fingerprint
from ..train.precision import full_precision
from ..train.token_cache import tokenize_within
from .base import Phase, RunContext, checkpoint_digest, phase_fingerprint_inputs

log = logging.getLogger(__name__)


class TokenizerUnavailable(UserError, RuntimeError):
    """The predictor phase found no tokenizer to train on."""


class PredictorPhase(Phase):
    """loss = (CE(s1) + CE(s2)) / 2 over every next-token position of the window.

    Batches are ``(s1, s2, stamp)`` from the token cache, or raw ``(x, stamp)`` windows that the
    frozen tokenizer encodes on the fly (past ``predictor.token_cache_mb``).
    """

    name = "predictor"
    val_key = "loss"

    def __init__(self) -> None:
        self.tokenizer: KronosTokenizer | None = None
        self._tokenizer_source: tuple[Path, dict[str, str]] | None = None

    def _locate_tokenizer(self, ctx: RunContext) -> tuple[Path, dict[str, str]]:
        """This run's tokenizer, else the registered one for this data + tokenizer config, else
        ``tokenizer.pretrained``. Returns its folder and the tags that identify it."""
        if self._tokenizer_source is None:
            # The registry is read on rank 0 only; every rank gets the same answer.
            self._tokenizer_source = ctx.world.rank_zero(self._find_tokenizer, ctx)
        return self._tokenizer_source

    def _find_tokenizer(self, ctx: RunContext) -> tuple[Path, dict[str, str]]:
        trained = ctx.results.get("tokenizer")
        if trained is not None:
            source = trained.checkpoint_dir, self._identity(trained.fingerprint, trained.version)
        else:
            inputs = phase_fingerprint_inputs(ctx, "tokenizer")
            fp = fingerprint(inputs)
            hit = ctx.registry.fetch(ctx.cfg.mlflow.tokenizer_model_name, fp, ctx.output_dir / "reused")
            if hit is not None:
                version, folder = hit
                log.info("predictor: using registered tokenizer %s", version.label)
                source = folder, self._identity(fp, version)
            elif ctx.cfg.tokenizer.pretrained:
                log.info("predictor: no tokenizer trained for this data yet; using tokenizer.pretrained=%s",
                         ctx.cfg.tokenizer.pretrained)
                source = (Path(str(ctx.cfg.tokenizer.pretrained)),
                          {"tokenizer_fingerprint": checkpoint_digest(ctx.cfg.tokenizer.pretrained)})
            else:
                near = ctx.registry.near_misses(ctx.cfg.mlflow.tokenizer_model_name, inputs)
                registered = ("; registered for this data: " + " | ".join(near) + ";" if near
                              else "; none is registered for this data;")
                raise TokenizerUnavailable(
                    "the predictor phase needs a tokenizer, and none was found: this run trained none, the "
                    f"registry ('{ctx.cfg.mlflow.tokenizer_model_name}' at {ctx.tracker.tracking_uri}) holds none "
                    f"for this data and tokenizer config (fingerprint {fp[:12]}){registered} "
                    "and tokenizer.pretrained is null. Set the differing settings to the registered values (a seed "
                    "for the predictor alone is predictor.seed), run phases=tokenizer first, run phases=both, or "
                    "set tokenizer.pretrained=<folder or hub id>.")
        return source

    @staticmethod
    def _identity(fp, version) -> dict[str, str]:
        tags = {"tokenizer_fingerprint": fp}
        if version is not None:
            tags["tokenizer_version"] = f"{version.name}/{version.version}"
        return tags

    def upstream(self, ctx: RunContext) -> dict[str, str]:
        return {"tokenizer_fingerprint": self._locate_tokenizer(ctx)[1]["tokenizer_fingerprint"]}

    def version_tags(self, ctx: RunContext) -> dict[str, str]:
        return self._locate_tokenizer(ctx)[1]

    def package_checkpoint(self, ctx: RunContext, folder: Path) -> None:
        """The registered version is also a servable MLflow pyfunc model, its tokenizer inside."""
        serving.package(folder, resolve_checkpoint_dir(self._locate_tokenizer(ctx)[0]), self.settings(ctx).max_context,
                        ctx.cfg.data.predict_window)

    def build_model(self, ctx: RunContext) -> Kronos:
        folder, _ = self._locate_tokenizer(ctx)
        tokenizer = KronosTokenizer.from_pretrained(folder).to(ctx.device).eval()
        for p in tokenizer.parameters():
            p.requires_grad_(False)
        settings = self.settings(ctx)
        if settings.pretrained:
            model = Kronos.from_pretrained(settings.pretrained)
            log.info("predictor: starting from the pretrained weights %s (its config.json sets the architecture: %s)",
                     settings.pretrained, ", ".join(f"{k}={v}" for k, v in model.config.items()))
        else:
            model = Kronos(**settings.arch)
        for bits in ("s1_bits", "s2_bits"):
            if model.config[bits] != tokenizer.config[bits]:
                raise ConfigError(
                    f"predictor {bits}={model.config[bits]} but the tokenizer ({folder}) has {bits}="
                    f"{tokenizer.config[bits]}; the predictor's vocabulary must match the tokenizer's codes "
                    f"({bits_advice(ctx.cfg, bits, tokenizer.config[bits])})")
        window = ctx.cfg.data.lookback_window + ctx.cfg.data.predict_window
        if window - 1 > settings.max_context:
            log.warning("predictor: training windows (%d tokens) exceed predictor.max_context=%d", window - 1,
                        settings.max_context)
        self.tokenizer = tokenizer
        self.teacher_forcing = bool(settings.teacher_forcing)
        return model

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (s1, s2) [B, T] of windows x [B, T, 6]: fp32 even inside the loop's autocast,
        since a code bit is a sign and bf16 rounding would flip some."""
        device = next(self.tokenizer.parameters()).device
        with full_precision(device):
            return self.tokenizer.encode(x.to(device).float(), half=True)

    def datasets(self, ctx: RunContext):
        splits = {"train": ctx.data.train, "val": ctx.data.val}
        cfg = self.tokenizer.config
        out = tokenize_within(self.settings(ctx).token_cache_mb, splits, self.encode, cfg["s1_bits"], cfg["s2_bits"],
                              device=ctx.device)
        return out["train"], out["val"]

    def loss(self, model: Kronos, batch) -> dict[str, torch.Tensor]:
        if len(batch) == 3:
            s1, s2, stamp = batch  # from the token cache
        else:
            x, stamp = batch
            s1, s2 = self.encode(x)  # [B, T] each
        return predictor_loss(model, s1, s2, stamp, self.teacher_forcing)
