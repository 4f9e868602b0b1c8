"""Transformer pieces shared by the tokenizer and the predictor.

Attribute names (``norm1``, ``self_attn.q_proj``, ``ffn.w1`` ...) are the published Kronos
state-dict keys: renaming one breaks loading of the released checkpoints.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * weight, normalised in fp32 even under autocast (the mean of squares underflows
    in bf16), and returned in x's dtype: a bf16 input stays bf16 for the matmuls after it instead
    of each of them casting an fp32 copy. In fp32, torch's fused kernel (the same values)."""
    if x.dtype == weight.dtype == torch.float32 and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)).type_as(x) * weight.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout, with the mask drawn from 16 random bits per element on a CPU (``keep_mask``): torch's
    CPU dropout kernel drew a [16, 71, 256] Bernoulli mask in 6.4 ms, ``torch.rand`` draws a float per
    element in 0.9 ms, and 64 random bits per four elements take 0.3 ms; masks were 6% of a predictor
    step. An element is kept with probability 1 - p (p to within 2^-17), then scaled by 1 / (1 - p)."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, p) * (1 / (1 - p))


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of ``shape``, each element True with probability 1 - p rounded to a multiple of
    2^-16, from torch's CPU generator (its seed decides the mask): 64 random bits per four elements,
    each element's 16 bits compared with p's share of the 65,536 values they take."""
    dropped = round(p * 65536)  # of the values 16 bits take
    if dropped >= 65536:  # (a threshold past int16's range would wrap)
        return torch.zeros(shape, dtype=torch.bool)
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)  # the whole 64-bit range
    return bits.view(torch.int16)[:n].view(shape) >= dropped - 32768


class Dropout(nn.Dropout):
    """nn.Dropout through ``dropout`` (same module, same state dict: it has none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d_model: int, ff_dim: int, dropout_p: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.dropout = Dropout(dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the head dimension (``inv_freq`` is a saved buffer)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, signed sin [P, head_dim]

    def _cos_sin_table(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin of positions 0..length-1 (at least), computed once and sliced
        after: a generation step would otherwise spend a dozen small ops on one position.
        The sin table's first half is negated, so ``rotate_half(x) * sin == roll(x) * signed_sin``."""
        table = self._table
        if table is None or table[0].shape[0] < length or table[0].device != device:
            # Grown by doubling: a generation past the table's end would otherwise rebuild it every step.
            size = max(length, 512, 2 * table[0].shape[0] if table is not None else 0)
            t = torch.arange(size, device=device, dtype=self.inv_freq.dtype)
            freqs = torch.outer(t, self.inv_freq.to(device))
            table = torch.cat((freqs, freqs), dim=-1).cos(), torch.cat((-freqs.sin(), freqs.sin()), dim=-1)
            if torch.compiler.is_compiling():  # a compiled graph computes it, never stores it
                return table
            self._table = table
        return table

    def cos_sin(self, seq_len: int, device: torch.device, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin [1, 1, seq_len, head_dim] of positions offset..offset+seq_len-1."""
        cos, sin = self._cos_sin_table(offset + seq_len, device)
        return cos[offset:offset + seq_len][None, None], sin[offset:offset + seq_len][None, None]

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q and k ([B, H, T, hd]) by the positions of the query sequence.

        A single query against a longer key sequence (one generation step of the dependency
        layer) rotates both by position 0, which is what the published generation computes.
        ``offset`` is the position of the first query (new positions appended to a KVCache).
        """
        cos, sin = self.cos_sin(q.shape[-2], q.device, offset)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return rotate(q, cos, sin), rotate(k, cos, sin)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) and ``sin`` sign-folded
    (RotaryEmbedding.cos_sin), so rotate_half(x) * sin == roll(x) * sin."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    """Scaled dot-product attention. On a CPU in bf16, torch's fused kernels run slower than its
    fp32 one at Kronos sizes (sequences of tens to hundreds), so there the two products run as
    bf16 matmuls and the softmax in fp32 (``_cpu_bf16_attention``); with a padding mask,
    attention is computed in fp32 outside autocast (rows with every key masked stay torch's)."""
    if q.device.type == "cpu" and (q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        if attn_mask is None:
            return _cpu_bf16_attention(q, k, v, dropout_p, is_causal)
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                                  dropout_p=dropout_p, is_causal=is_causal).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)


def _cpu_bf16_attention(q, k, v, dropout_p: float, is_causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + causal mask) v with both products bf16 matmuls (fp32 accumulation,
    the scale and the mask applied inside the first) and the softmax computed in fp32 by torch's
    bf16 kernel; at these sizes about 4x faster than CPU's bf16 SDPA kernels, forward + backward
    (benchmarks/bench_train.py profiles it)."""
    b, h, t, hd = q.shape
    s, dtype = k.shape[-2], torch.bfloat16
    with torch.autocast("cpu", enabled=False):
        bias = torch.zeros(t, s, dtype=dtype, device=q.device)
        if is_causal:
            bias.masked_fill_(torch.ones(t, s, dtype=torch.bool, device=q.device).triu(s - t + 1), float("-inf"))
        scores = torch.baddbmm(bias, q.reshape(b * h, t, hd).to(dtype),
                               k.reshape(b * h, s, hd).to(dtype).transpose(1, 2), alpha=hd ** -0.5)
        probs = dropout(torch.softmax(scores, dim=-1), dropout_p)
        return torch.bmm(probs, v.reshape(b * h, s, hd).to(dtype)).view(b, h, t, hd).to(q.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, causal: bool = True) -> torch.Tensor:
    """Multi-head attention of queries [B, H, T, hd] over keys and values [B, H, S, hd] -> [B, H, T, hd].

    The one attention of the model: the modules' forward and model.decoding's cached step both call
    it, so the two cannot compute attention differently. ``padding_mask`` [B, S] is True where a key
    is padding. A single query is the newest position: it may see every key.
    """
    if padding_mask is None:
        return _sdpa(q, k, v, dropout_p=dropout_p, is_causal=causal and q.shape[-2] > 1)
    allowed = ~padding_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
    if causal and q.shape[-2] > 1:
        q_len, k_len = q.shape[-2], k.shape[-2]
        allowed = allowed & torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril()
    return _sdpa(q, k, v, attn_mask=allowed, dropout_p=dropout_p)


class KVCache:
    """Keys and values one attention layer has already computed, for decoding a position at a time.

    Preallocated for ``max_len`` positions (at the first append, in the keys' dtype and device),
    so a step writes one position instead of copying the whole history.
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add k, v [B, H, t, hd] after the cached positions; returns all keys and values so far."""
        end = self.length + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KVCache holds {self.max_len} positions; appending {k.shape[-2]} "
                             f"to {self.length} would need {end}")
        if self.k is None:
            b, h, _, hd = k.shape
            self.k, self.v = k.new_empty(b, h, self.max_len, hd), v.new_empty(b, h, self.max_len, hd)
        self.k.narrow(2, self.length, k.shape[-2]).copy_(k)
        self.v.narrow(2, self.length, v.shape[-2]).copy_(v)
        self.length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)

    def repeat_interleave(self, n: int) -> None:
        """Repeat each row n times (rows of one series adjacent), e.g. one history -> n sample paths."""
        if self.k is not None and n > 1:
            self.k, self.v = self.k.repeat_interleave(n, dim=0), self.v.repeat_interleave(n, dim=0)


class _Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, attn_dropout_p: float = 0.0,
                 resid_dropout_p: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim)
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout = Dropout(resid_dropout_p)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]

    def attend(self, query, key, value, padding_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        """With a cache (empty: the prefill of a generation), the keys and values are also stored in it;
        the steps after it are model.decoding's."""
        b, t, d = query.shape
        q, k = self.rotary(self._heads(self.q_proj(query)), self._heads(self.k_proj(key)))
        v = self._heads(self.v_proj(value))
        if cache is not None:
            if padding_mask is not None or cache.length:
                raise ValueError(f"attention fills an empty cache without a padding mask; this one holds "
                                 f"{cache.length} positions (later steps go through model.decoding)")
            cache.append(k, v)
        out = attention(q, k, v, padding_mask, self.attn_dropout_p if self.training else 0.0)
        return self.resid_dropout(self.out_proj(out.transpose(1, 2).reshape(b, t, d)))


class SelfAttention(_Attention):
    """Causal multi-head self-attention with rotary positions."""

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        return self.attend(x, x, x, padding_mask, cache)


class CrossAttention(_Attention):
    """Causal cross-attention: position t of the query sees keys at positions <= t.

    Causal in train and eval mode alike, so a validation loss never sees later positions.
    """

    def forward(self, query, key, value, padding_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        return self.attend(query, key, value, padding_mask, cache)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, ffn_dropout_p: float = 0.0,
                 attn_dropout_p: float = 0.0, resid_dropout_p: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim, ffn_dropout_p)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), padding_mask, cache=cache)
        return x + self.ffn(self.norm2(x))
