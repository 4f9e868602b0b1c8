"""Phase 2: fine-tune the predictor on next-token cross-entropy, tokenizer frozen."""
from __future__ import annotations

import dataclasses
import logging

import torch

from ..model import Kronos, KronosTokenizer
from ..model.losses import predictor_loss
from ..schemas import PredictorConfig, bits_mismatch
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
    servable = True  # a registered version is a servable MLflow model, its tokenizer inside

    def __init__(self, settings: PredictorConfig) -> None:
        super().__init__(settings)
        self.tokenizer: KronosTokenizer | None = None

    def build_model(self, ctx: PhaseContext) -> Kronos:
        folder = ctx.upstream["tokenizer"].folder
        tokenizer = KronosTokenizer.from_pretrained(folder).to(ctx.device).eval()
        for p in tokenizer.parameters():
            p.requires_grad_(False)
        settings = self.settings
        if settings.pretrained:
            model = Kronos.from_pretrained(settings.pretrained)
            log.info("predictor: starting from the pretrained weights %s (its config.json sets the architecture: %s)",
                     settings.pretrained, ", ".join(f"{k}={v}" for k, v in model.config.items()))
        else:
            model = Kronos(**dataclasses.asdict(settings.arch))
        for bits in ("s1_bits", "s2_bits"):
            if model.config[bits] != tokenizer.config[bits]:
                raise bits_mismatch(model.config[bits], tokenizer.config[bits], bits, f"the tokenizer ({folder})",
                                    settings.pretrained, ctx.upstream["tokenizer"].pretrained)
        tokens = ctx.window.lookback + ctx.window.horizon - 1
        if tokens > ctx.window.max_context:
            log.warning("predictor: training windows (%d tokens) exceed predictor.max_context=%d", tokens,
                        ctx.window.max_context)
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
        codes = self.tokenizer.config
        out = tokenize_within(self.settings.token_cache_mb, splits, self.encode, codes["s1_bits"], codes["s2_bits"],
                              device=ctx.device)
        return out["train"], out["val"]

    def loss(self, model: Kronos, batch) -> dict[str, torch.Tensor]:
        if len(batch) == 3:
            s1, s2, stamp = batch  # from the token cache
        else:
            x, stamp = batch
            s1, s2 = self.encode(x)  # [B, T] each
        return predictor_loss(model, s1, s2, stamp, self.teacher_forcing)
