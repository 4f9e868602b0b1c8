"""KronosTokenizer: a causal transformer VQ-VAE that turns OHLCV windows into s1/s2 tokens."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import TransformerBlock
from .checkpoint import PretrainedMixin, constructor_config
from .quantizer import BSQuantizer


class KronosTokenizer(PretrainedMixin, nn.Module):
    """Encoder -> BSQ -> decoder, with a second decoder pass from the s1 bits alone.

    ``n_enc_layers`` / ``n_dec_layers`` count the embedding as a layer, as the published
    configs do: the encoder and decoder each hold ``n - 1`` transformer blocks.
    """

    def __init__(self, d_in, d_model, n_heads, ff_dim, n_enc_layers, n_dec_layers, ffn_dropout_p,
                 attn_dropout_p, resid_dropout_p, s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size):
        super().__init__()
        self.config = constructor_config(KronosTokenizer, locals())
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.codebook_dim = s1_bits + s2_bits

        def blocks(n):
            return nn.ModuleList(TransformerBlock(d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p,
                                                  resid_dropout_p) for _ in range(n - 1))

        self.embed = nn.Linear(d_in, d_model)
        self.encoder = blocks(n_enc_layers)
        self.quant_embed = nn.Linear(d_model, self.codebook_dim)
        self.tokenizer = BSQuantizer(s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size)
        self.post_quant_embed_pre = nn.Linear(s1_bits, d_model)
        self.post_quant_embed = nn.Linear(self.codebook_dim, d_model)
        self.decoder = blocks(n_dec_layers)
        self.head = nn.Linear(d_model, d_in)

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)  # [B, T, d_model]
        for block in self.encoder:
            z = block(z)
        return self.quant_embed(z)  # [B, T, codebook_dim]

    def _decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.decoder:
            z = block(z)
        return self.head(z)  # [B, T, d_in]

    def forward(self, x: torch.Tensor):
        """x [B, T, d_in] -> ((recon from s1 bits, recon from all bits), bsq_loss, quantized, indices)."""
        bsq_loss, quantized, indices = self.tokenizer(self._latent(x))
        # Both decoder passes as one batch of twice the rows: the same values, half the kernel calls.
        both = torch.cat([self.post_quant_embed_pre(quantized[..., :self.s1_bits]), self.post_quant_embed(quantized)])
        z_pre, z = self._decode_latent(both).chunk(2)
        return (z_pre, z), bsq_loss, quantized, indices

    def encode(self, x: torch.Tensor, half: bool = False):
        """Token ids: ``(s1_ids, s2_ids)`` with ``half=True``, else one id over all bits."""
        _, _, indices = self.tokenizer(self._latent(x), half=half, with_loss=False)
        return indices

    def indices_to_bits(self, ids, half: bool = False) -> torch.Tensor:
        """Token ids back to the scaled ±1 code the decoder reads."""
        if half:
            s1, s2 = ids
            bits = torch.cat([self._bits(s1, self.s1_bits), self._bits(s2, self.s2_bits)], dim=-1)
        else:
            bits = self._bits(ids, self.codebook_dim)
        return (bits.float() * 2 - 1) / self.codebook_dim ** 0.5

    @staticmethod
    def _bits(ids: torch.Tensor, n: int) -> torch.Tensor:
        mask = 2 ** torch.arange(n, device=ids.device, dtype=torch.long)
        return (ids.long().unsqueeze(-1) & mask) != 0

    def decode(self, ids, half: bool = False) -> torch.Tensor:
        """Reconstruct [B, T, d_in] from token ids (``(s1, s2)`` with ``half=True``)."""
        code = self.indices_to_bits(ids, half).to(self.post_quant_embed.weight.dtype)
        return self._decode_latent(self.post_quant_embed(code))
