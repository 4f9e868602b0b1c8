"""The training losses of the two models, apart from the phase runners (which bring MLflow), so the
training benchmark and other tools compute exactly what the phases minimise."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .predictor import Kronos
from .quantizer import BatchMean, codebook_batch_mean
from .tokenizer import KronosTokenizer


def tokenizer_loss(model: KronosTokenizer, x: torch.Tensor,
                   batch_mean: BatchMean | None = None) -> dict[str, torch.Tensor]:
    """loss = (mse(recon from s1 bits) + mse(recon from all bits) + bsq_loss) / 2, computed in fp32;
    ``batch_mean``: the batch the codebook entropy is taken over (default: ``x``)."""
    with codebook_batch_mean(model, batch_mean):
        (recon_s1, recon_full), bsq_loss, _, _ = model(x)
    recon_s1_loss = F.mse_loss(recon_s1.float(), x)
    recon_full_loss = F.mse_loss(recon_full.float(), x)
    recon_loss = recon_s1_loss + recon_full_loss
    return {"loss": (recon_loss + bsq_loss) / 2, "recon_loss": recon_loss, "recon_s1_loss": recon_s1_loss,
            "recon_full_loss": recon_full_loss, "bsq_loss": bsq_loss}


def predictor_loss(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamp: torch.Tensor,
                   teacher_forcing: bool) -> dict[str, torch.Tensor]:
    """loss = (CE(s1) + CE(s2)) / 2 over every next-token position of token windows s1, s2 [B, T]."""
    s1, s2 = s1.long(), s2.long()
    s1_in, s2_in, s1_out, s2_out = s1[:, :-1], s2[:, :-1], s1[:, 1:], s2[:, 1:]
    s1_logits, s2_logits = model(s1_in, s2_in, stamp[:, :-1],
                                 use_teacher_forcing=teacher_forcing or not model.training, s1_targets=s1_out)
    # The fp32 logits serve the loss and the accuracy: argmax reads an upcast bf16 tensor 1.5x faster.
    s1_logits, s2_logits = s1_logits.flatten(0, 1).float(), s2_logits.flatten(0, 1).float()
    s1_out, s2_out = s1_out.flatten(), s2_out.flatten()
    ce_s1, ce_s2 = F.cross_entropy(s1_logits, s1_out), F.cross_entropy(s2_logits, s2_out)
    return {"loss": (ce_s1 + ce_s2) / 2, "ce_s1": ce_s1, "ce_s2": ce_s2,
            "s1_accuracy": (s1_logits.argmax(-1) == s1_out).float().mean(),
            "s2_accuracy": (s2_logits.argmax(-1) == s2_out).float().mean()}
