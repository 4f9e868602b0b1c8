"""Binary spherical quantization (BSQ): each latent dimension becomes one bit.

A code of ``s1_bits + s2_bits`` bits is split into a coarse token (the first ``s1_bits`` bits)
and a fine token (the rest). Bit i of a token has weight 2**i (little-endian).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

# The mean over a batch of per-code rows [N, D] -> [D].
BatchMean = Callable[[torch.Tensor], torch.Tensor]


def _binary_entropy_sum(p: torch.Tensor) -> torch.Tensor:
    """Entropy of Bernoulli(p) in nats, summed over the last dimension."""
    probs = torch.stack([p, 1 - p], dim=-1)
    return -(probs * torch.log(probs + 1e-8)).sum(dim=-1).sum(dim=-1)


class BinarySphericalQuantizer(nn.Module):
    """Sign quantizer on the unit sphere with commitment and entropy regularisation.

    loss = beta * commitment + zeta * (gamma0 * per-sample entropy - gamma * codebook entropy),
    with the entropies in their analytical per-bit form. The codebook entropy is that of the mean
    bit probabilities over the batch: the batch at hand, or the one ``batch_mean`` averages
    (set for a call by ``codebook_batch_mean``).
    """

    def __init__(self, embed_dim: int, beta: float, gamma0: float, gamma: float, zeta: float,
                 group_size: int):
        super().__init__()
        if embed_dim % group_size:
            raise ConfigError(f"s1_bits + s2_bits = {embed_dim} must be divisible by group_size={group_size}")
        self.embed_dim = embed_dim
        self.beta, self.gamma0, self.gamma, self.zeta = beta, gamma0, gamma, zeta
        self.group_size = group_size
        self.batch_mean: BatchMean | None = None
        # Saved in published checkpoints; kept so the key set matches.
        self.register_buffer("basis", 2 ** torch.arange(embed_dim - 1, -1, -1))
        self.register_buffer("group_basis", 2 ** torch.arange(group_size - 1, -1, -1))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Signs of z scaled onto the unit sphere; straight-through gradient (scaled too)."""
        zhat = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return (z + (zhat - z).detach()) / self.embed_dim ** 0.5

    def loss(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        commitment = ((zq.detach() - z) ** 2).sum(dim=-1).mean()
        # P(bit = -1), per dimension, in fp32 (or float64 for a float64 z: exact gradient checks)
        p = torch.sigmoid(-4 * z.to(torch.promote_types(z.dtype, torch.float32)) / self.embed_dim ** 0.5)
        per_sample = _binary_entropy_sum(p).mean()
        rows = p.reshape(-1, self.embed_dim)
        codebook = _binary_entropy_sum(rows.mean(dim=0) if self.batch_mean is None else self.batch_mean(rows))
        return self.beta * commitment + self.zeta * (self.gamma0 * per_sample - self.gamma * codebook)


class BSQuantizer(nn.Module):
    """Normalise, quantize, and read the bits as s1/s2 token ids."""

    def __init__(self, s1_bits: int, s2_bits: int, beta: float, gamma0: float, gamma: float,
                 zeta: float, group_size: int):
        super().__init__()
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.codebook_dim = s1_bits + s2_bits
        self.bsq = BinarySphericalQuantizer(self.codebook_dim, beta, gamma0, gamma, zeta, group_size)

    @staticmethod
    def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
        weights = 2 ** torch.arange(bits.shape[-1], device=bits.device)
        return ((bits >= 0).long() * weights).sum(dim=-1)

    def indices(self, quantized: torch.Tensor, half: bool):
        if half:
            return (self.bits_to_indices(quantized[..., :self.s1_bits]),
                    self.bits_to_indices(quantized[..., self.s1_bits:]))
        return self.bits_to_indices(quantized)

    def forward(self, z: torch.Tensor, half: bool = False, with_loss: bool = True):
        """-> (bsq_loss or None, quantized [B, T, codebook_dim], indices)."""
        z = F.normalize(z, dim=-1)
        quantized = self.bsq.quantize(z)
        loss = self.bsq.loss(z, quantized) if with_loss else None
        return loss, quantized, self.indices(quantized, half)


@contextmanager
def codebook_batch_mean(model: nn.Module, mean: BatchMean | None) -> Iterator[None]:
    """Within the block the quantizers of ``model`` (wrapped or not: DDP, ``torch.compile``) take
    their codebook entropy over the batch that ``mean`` averages (None: the batch at hand). A
    data-parallel trainer passes the mean over every process's batch (train/distributed.py). Set
    for the call, not passed as an argument, so the published ``forward(x)`` keeps its signature."""
    quantizers = [m for m in model.modules() if isinstance(m, BinarySphericalQuantizer)]
    for quantizer in quantizers:
        quantizer.batch_mean = mean
    try:
        yield
    finally:
        for quantizer in quantizers:
            quantizer.batch_mean = None
