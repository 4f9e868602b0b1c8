"""Phase 2: fine-tune the predictor on next-token cross-entropy, tokenizer frozen."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import bits_advice
from ..errors import ConfigError
from ..forecasting import pyfunc
from ..forecasting.requests import Limits
from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import resolve_checkpoint_dir
from ..model.losses import predictor_loss
from ..train.precision import full_precision
from ..train.token_cache import tokenize_within
from .base import Phase, PhaseContext

log = logging.getLogger(__name__)


class PredictorPhase(Phase):
    """loss = (CE(s1) + CE(s2)) / 2 over every next-token position of the window.

    Batches are ``(s1, s2, stamp)`` from the token cache, or raw ``(x, stamp)`` windows that the
    frozen tokenizer encodes on the fly (past ``predictor.token_cache_mb``).
    """

    name = "predictor"
    val_key = "loss"
    builds_on = ("tokenizer",)

    def __init__(self) -> None:
        self.tokenizer: KronosTokenizer | None = None

    def package_checkpoint(self, ctx: PhaseContext, folder: Path) -> None:
        """The registered version is also a servable MLflow pyfunc model, its tokenizer inside."""
        pyfunc.package(folder, resolve_checkpoint_dir(ctx.upstream["tokenizer"].folder),
                       self.settings(ctx.cfg).max_context, ctx.cfg.data.predict_window,
                       Limits.from_mapping(ctx.cfg.get("serving")))

    def build_model(self, ctx: PhaseContext) -> Kronos:
        folder = ctx.upstream["tokenizer"].folder
        tokenizer = KronosTokenizer.from_pretrained(folder).to(ctx.device).eval()
        for p in tokenizer.parameters():
            p.requires_grad_(False)
        settings = self.settings(ctx.cfg)
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

    def datasets(self, ctx: PhaseContext):
        splits = {"train": ctx.data.train, "val": ctx.data.val}
        cfg = self.tokenizer.config
        out = tokenize_within(self.settings(ctx.cfg).token_cache_mb, splits, self.encode, cfg["s1_bits"], cfg["s2_bits"],
                              device=ctx.device)
        return out["train"], out["val"]

    def loss(self, model: Kronos, batch) -> dict[str, torch.Tensor]:
        if len(batch) == 3:
            s1, s2, stamp = batch  # from the token cache
        else:
            x, stamp = batch
            s1, s2 = self.encode(x)  # [B, T] each
        return predictor_loss(model, s1, s2, stamp, self.teacher_forcing)
