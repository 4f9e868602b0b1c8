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
    """loss = (CE(s1) + CE(s2)) / 2 over every next-token position of token windows s1, s2 [B, T];
    an accuracy counts the positions whose target has the highest logit (a tie for it counts)."""
    s1, s2 = s1.long(), s2.long()
    s1_in, s2_in, s1_out, s2_out = s1[:, :-1], s2[:, :-1], s1[:, 1:], s2[:, 1:]
    s1_logits, s2_logits = model(s1_in, s2_in, stamp[:, :-1],
                                 use_teacher_forcing=teacher_forcing or not model.training, s1_targets=s1_out)
    ce_s1, s1_accuracy = token_cross_entropy(s1_logits.flatten(0, 1), s1_out.flatten())
    ce_s2, s2_accuracy = token_cross_entropy(s2_logits.flatten(0, 1), s2_out.flatten())
    return {"loss": (ce_s1 + ce_s2) / 2, "ce_s1": ce_s1, "ce_s2": ce_s2,
            "s1_accuracy": s1_accuracy, "s2_accuracy": s2_accuracy}


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F.cross_entropy of logits [N, V] (bf16 or fp32) against targets [N], in fp32, and the share of
    rows whose target has the highest logit. Faster on a CPU (issue 30): the gradient (softmax -
    one-hot) / N is made from the saved log-probabilities in the logits' dtype (no zero-filled
    gradient to scatter into, no separate cast), the hits from the row maxima (torch's CPU argmax
    took 13x as long)."""
    return _TokenCrossEntropy.apply(logits, targets)


class _TokenCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor):
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
        picked = logp.gather(1, targets[:, None]).squeeze(1)
        hits = (picked >= logp.amax(dim=-1)).float().mean()
        ctx.mark_non_differentiable(hits)
        ctx.save_for_backward(logp, targets)
        ctx.dtype = logits.dtype
        return -picked.mean(), hits

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_hits: torch.Tensor):
        logp, targets = ctx.saved_tensors
        grad = logp.exp()
        grad.scatter_add_(1, targets[:, None], grad.new_full((len(targets), 1), -1.0))
        return grad.mul_(grad_loss / len(targets)).to(ctx.dtype), None
