"""Transformer pieces shared by the tokenizer and the predictor.

Attribute names (``norm1``, ``self_attn.q_proj``, ``ffn.w1`` ...) are the published Kronos
state-dict keys: renaming one breaks loading of the released checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even under autocast: the mean of squares underflows in bf16.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d_model: int, ff_dim: int, dropout_p: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the head dimension (``inv_freq`` is a saved buffer)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def cos_sin(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim]
        return emb.cos()[None, None], emb.sin()[None, None]

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q and k ([B, H, T, hd]) by the positions of the query sequence.

        A single query against a longer key sequence (one generation step of the dependency
        layer) rotates both by position 0, which is what the published generation computes.
        """
        cos, sin = self.cos_sin(q.shape[-2], q.device)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


def _sdpa(q, k, v, **kwargs):
    """Scaled dot-product attention. On a CPU its bf16 kernels run 2-3x slower than its fp32 ones
    at Kronos sizes (forward + backward, measured), and CPU autocast lowers it to bf16, so there
    attention is computed in fp32 outside autocast."""
    if q.device.type == "cpu" and (q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def _attend(q, k, v, padding_mask, dropout_p, causal):
    """Scaled dot-product attention; ``padding_mask`` [B, S] is True where a key is padding."""
    if padding_mask is None:
        # A single query is the newest position: it may see every key.
        return _sdpa(q, k, v, dropout_p=dropout_p,
                                              is_causal=causal and q.shape[-2] > 1)
    allowed = ~padding_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
    if causal and q.shape[-2] > 1:
        q_len, k_len = q.shape[-2], k.shape[-2]
        allowed = allowed & torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril()
    return _sdpa(q, k, v, attn_mask=allowed, dropout_p=dropout_p)


class _Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, attn_dropout_p: float = 0.0,
                 resid_dropout_p: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim)
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]

    def attend(self, query, key, value, padding_mask=None) -> torch.Tensor:
        b, t, d = query.shape
        q, k = self.rotary(self._heads(self.q_proj(query)), self._heads(self.k_proj(key)))
        v = self._heads(self.v_proj(value))
        out = _attend(q, k, v, padding_mask, self.attn_dropout_p if self.training else 0.0, causal=True)
        return self.resid_dropout(self.out_proj(out.transpose(1, 2).reshape(b, t, d)))


class SelfAttention(_Attention):
    """Causal multi-head self-attention with rotary positions."""

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, x, x, padding_mask)


class CrossAttention(_Attention):
    """Causal cross-attention: position t of the query sees keys at positions <= t.

    Causal in train and eval mode alike, so a validation loss never sees later positions.
    """

    def forward(self, query, key, value, padding_mask=None) -> torch.Tensor:
        return self.attend(query, key, value, padding_mask)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, ffn_dropout_p: float = 0.0,
                 attn_dropout_p: float = 0.0, resid_dropout_p: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim, ffn_dropout_p)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), padding_mask)
        return x + self.ffn(self.norm2(x))
