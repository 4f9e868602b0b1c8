"""Phase 1: fine-tune the tokenizer on reconstruction + quantizer loss."""
from __future__ import annotations

import dataclasses
import logging

import torch

from ..model import KronosTokenizer
from ..model.losses import tokenizer_loss
from ..train.distributed import global_batch_mean
from .base import Phase, PhaseContext

log = logging.getLogger(__name__)


class TokenizerPhase(Phase):
    """loss = (mse(recon from s1 bits) + mse(recon from all bits) + bsq_loss) / 2;
    val_loss = mse(recon from all bits)."""

    name = "tokenizer"
    val_key = "recon_full_loss"

    def build_model(self, ctx: PhaseContext) -> KronosTokenizer:
        settings = self.settings
        if settings.pretrained:
            log.info("tokenizer: starting from %s (its config.json sets the architecture)", settings.pretrained)
            return KronosTokenizer.from_pretrained(settings.pretrained)
        return KronosTokenizer(**dataclasses.asdict(settings.arch))

    def loss(self, model: KronosTokenizer, batch) -> dict[str, torch.Tensor]:
        """In training the codebook entropy is taken over the global batch (all ranks'), as one
        process with that batch takes it; validation, whose shards may differ in length between
        ranks, keeps each batch's own (no collective there)."""
        x, _stamp = batch
        return tokenizer_loss(model, x, batch_mean=global_batch_mean if model.training else None)

    @torch.no_grad()
    def epoch_metrics(self, model: KronosTokenizer, loader) -> dict[str, float]:
        """Share of the s1 vocabulary and of the full codebook used on the validation windows."""
        s1_seen, full_seen = set(), set()
        device = next(model.parameters()).device
        for x, _ in loader:
            s1, s2 = model.encode(x.to(device), half=True)
            s1_seen.update(s1.unique().tolist())
            full_seen.update((s1 + s2 * 2 ** model.s1_bits).unique().tolist())
        return {"s1_codebook_usage": len(s1_seen) / 2 ** model.s1_bits,
                "codebook_usage": len(full_seen) / 2 ** model.codebook_dim}
