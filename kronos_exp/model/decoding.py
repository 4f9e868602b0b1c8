"""KV-cached decoding of Kronos: what generation keeps between steps, and one step for one position.

A cached step computes a single position, so on a CPU its cost is reading the weights once plus a
fixed price per op and per module call. Through the modules (q, k and v three matmuls, every
projection, rotary, dropout and check a call of its own) that fixed price was about a quarter of a
Kronos-mini step. So a DecodeCache also holds each block's q/k/v and w1/w3 weights concatenated
(one matmul each), and the step functions compute the modules' arithmetic from the weights with
fewer calls. They are inference-only (no dropout); tests compare their logits with the module
path's and the generated tokens with full recomputation.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import KVCache, TransformerBlock, _Attention, attention, rms_norm, rotate


class _Fused(NamedTuple):
    weight: torch.Tensor
    bias: torch.Tensor | None


def _fuse(*layers: nn.Linear) -> _Fused:
    """The layers' projections as one matmul (outputs concatenated in the given order)."""
    biases = [layer.bias for layer in layers]
    return _Fused(torch.cat([layer.weight for layer in layers]),
                  None if biases[0] is None else torch.cat(biases))


class DecodeCache:
    """What generation keeps between steps of one model: keys and values of every transformer block
    and of the dependency layer, for positions 0..length-1 of a window that does not slide, and what
    the step functions read in fewer ops than the modules: fused projections and the stacked
    calendar tables (a snapshot of the model's weights when it was made)."""

    def __init__(self, model, max_len: int):
        self.blocks = [KVCache(max_len) for _ in model.transformer]
        self.dep = KVCache(max_len)
        with torch.no_grad():
            self.qkv = [_fuse(b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj) for b in model.transformer]
            self.w13 = [_fuse(b.ffn.w1, b.ffn.w3) for b in model.transformer]
            attn = model.dep_layer.cross_attn
            self.dep_kv = _fuse(attn.k_proj, attn.v_proj)
            self.time_table, self.time_offsets = model.time_emb.stacked()

    @property
    def length(self) -> int:
        return self.blocks[0].length if self.blocks else self.dep.length

    def repeat_interleave(self, n: int) -> None:
        for layer in (*self.blocks, self.dep):
            layer.repeat_interleave(n)


def _attend_cached(attn: _Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   cache: KVCache) -> torch.Tensor:
    """The newest position's query [B, H, 1, hd] against every cached key plus its own (k, v), then
    the output projection: [B, 1, d]. Attends through blocks.attention, as the modules do."""
    k, v = cache.append(k, v)
    out = attention(q, k, v)
    b = q.shape[0]
    return F.linear(out.transpose(1, 2).reshape(b, 1, -1), attn.out_proj.weight, attn.out_proj.bias)


def _block_step(block: TransformerBlock, qkv_proj: _Fused, w13: _Fused, x: torch.Tensor,
                cache: KVCache) -> torch.Tensor:
    """TransformerBlock.forward for one position [B, 1, d] after the cached ones."""
    attn = block.self_attn
    qkv = F.linear(rms_norm(x, block.norm1.weight, block.norm1.eps), *qkv_proj).view(
        x.shape[0], 3, attn.n_heads, 1, attn.head_dim)
    cos, sin = (t.to(x.dtype) for t in attn.rotary.cos_sin(1, x.device, cache.length))
    qk = rotate(qkv[:, :2], cos, sin)  # q and k at once
    x = x + _attend_cached(attn, qk[:, 0], qk[:, 1], qkv[:, 2], cache)
    gate, up = F.linear(rms_norm(x, block.norm2.weight, block.norm2.eps), *w13).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, block.ffn.w2.weight)


def step_hidden(model, s1_ids: torch.Tensor, s2_ids: torch.Tensor, stamp: torch.Tensor | None,
                cache: DecodeCache) -> torch.Tensor:
    """Final hidden state [B, 1, d_model] of the position after the cached ones (tokens [B, 1])."""
    x = model.embedding(s1_ids, s2_ids)
    if stamp is not None:  # TemporalEmbedding.forward in one lookup
        x = x + F.embedding(stamp.long() + cache.time_offsets, cache.time_table).sum(dim=-2)
    for block, qkv, w13, layer_cache in zip(model.transformer, cache.qkv, cache.w13, cache.blocks):
        x = _block_step(block, qkv, w13, x, layer_cache)
    return rms_norm(x, model.norm.weight, model.norm.eps)


def step_s2_hidden(model, hidden: torch.Tensor, s1_ids: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
    """DependencyAwareLayer.forward for the newest position's hidden state [B, 1, d] and s1 token [B, 1].

    Its single query rotates by position 0, which is no rotation, as the prefill stored the keys.
    """
    dep, b = model.dep_layer, hidden.shape[0]
    attn = dep.cross_attn
    h, hd = attn.n_heads, attn.head_dim
    kv = F.linear(hidden, *cache.dep_kv).view(b, 2, h, 1, hd)
    q = F.linear(model.embedding.emb_s1(s1_ids), attn.q_proj.weight, attn.q_proj.bias).view(b, 1, h, hd)
    attended = _attend_cached(attn, q.transpose(1, 2), kv[:, 0], kv[:, 1], cache.dep)
    return rms_norm(hidden + attended, dep.norm.weight, dep.norm.eps)
