"""Kronos: an autoregressive transformer over (s1, s2) token pairs with calendar embeddings.

Each step predicts the coarse token s1 from the history, then the fine token s2 from the history
and the chosen s1 (the dependency layer).
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import CrossAttention, Dropout, KVCache, RMSNorm, TransformerBlock
from .checkpoint import PretrainedMixin, constructor_config
from .decoding import DecodeCache, step_hidden, step_s2_hidden

# minute, hour, weekday, day of month, month: the order of the stamp's last axis.
CALENDAR_SIZES = {"minute": 60, "hour": 24, "weekday": 7, "day": 32, "month": 13}


class HierarchicalEmbedding(nn.Module):
    """Embed s1 and s2 separately and fuse them into one d_model vector per step."""

    def __init__(self, s1_bits: int, s2_bits: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.emb_s1 = nn.Embedding(2 ** s1_bits, d_model)
        self.emb_s2 = nn.Embedding(2 ** s2_bits, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)

    def forward(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(self.d_model)
        return self.fusion_proj(torch.cat([self.emb_s1(s1_ids) * scale, self.emb_s2(s2_ids) * scale], dim=-1))


class SinusoidalEmbedding(nn.Module):
    """A frozen sinusoidal table (``learn_te=False``); stored as ``emb.weight`` like the published model."""

    def __init__(self, size: int, d_model: int):
        super().__init__()
        position = torch.arange(size).float().unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
        table = torch.zeros(size, d_model)
        table[:, 0::2] = torch.sin(position * div_term)
        table[:, 1::2] = torch.cos(position * div_term)
        self.emb = nn.Embedding(size, d_model)
        self.emb.weight = nn.Parameter(table, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).detach()


class TemporalEmbedding(nn.Module):
    """Sum of minute, hour, weekday, day and month embeddings of each step's timestamp."""

    def __init__(self, d_model: int, learn_te: bool):
        super().__init__()
        make = nn.Embedding if learn_te else SinusoidalEmbedding
        self.minute_embed = make(CALENDAR_SIZES["minute"], d_model)
        self.hour_embed = make(CALENDAR_SIZES["hour"], d_model)
        self.weekday_embed = make(CALENDAR_SIZES["weekday"], d_model)
        self.day_embed = make(CALENDAR_SIZES["day"], d_model)
        self.month_embed = make(CALENDAR_SIZES["month"], d_model)

    def forward(self, stamp: torch.Tensor) -> torch.Tensor:
        s = stamp.long()  # [B, T, 5]
        return (self.minute_embed(s[..., 0]) + self.hour_embed(s[..., 1]) + self.weekday_embed(s[..., 2])
                + self.day_embed(s[..., 3]) + self.month_embed(s[..., 4]))

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The five tables as one [sum of sizes, d_model] and each field's first row in it, so a
        decoding step embeds a stamp with one lookup: table[stamp + offsets].sum(-2)."""
        fields = (self.minute_embed, self.hour_embed, self.weekday_embed, self.day_embed, self.month_embed)
        tables = [f.weight if isinstance(f, nn.Embedding) else f.emb.weight for f in fields]
        offsets = torch.tensor([0, *itertools.accumulate(len(t) for t in tables[:-1])], device=tables[0].device)
        return torch.cat(tables), offsets


class DependencyAwareLayer(nn.Module):
    """s2 context: the s1 embedding attends (causally) over the transformer's hidden states."""

    def __init__(self, d_model: int, n_heads: int = 4, attn_dropout_p: float = 0.0, resid_dropout_p: float = 0.0):
        super().__init__()
        self.cross_attn = CrossAttention(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm = RMSNorm(d_model)

    def forward(self, hidden: torch.Tensor, sibling: torch.Tensor, padding_mask=None,
                cache: KVCache | None = None) -> torch.Tensor:
        """hidden [B, T, d], sibling [B, Tq, d] for the last Tq positions -> [B, Tq, d].

        An (empty) cache keeps the keys and values for generation's later steps.
        """
        attended = self.cross_attn(sibling, hidden, hidden, padding_mask, cache=cache)
        return self.norm(hidden[:, -sibling.shape[1]:] + attended)


class DualHead(nn.Module):
    def __init__(self, s1_bits: int, s2_bits: int, d_model: int):
        super().__init__()
        self.proj_s1 = nn.Linear(d_model, 2 ** s1_bits)
        self.proj_s2 = nn.Linear(d_model, 2 ** s2_bits)


class Kronos(PretrainedMixin, nn.Module):
    def __init__(self, s1_bits, s2_bits, n_layers, d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p,
                 resid_dropout_p, token_dropout_p, learn_te):
        super().__init__()
        self.config = constructor_config(Kronos, locals())
        self.s1_vocab_size = 2 ** s1_bits
        self.embedding = HierarchicalEmbedding(s1_bits, s2_bits, d_model)
        self.time_emb = TemporalEmbedding(d_model, learn_te)
        self.token_drop = Dropout(token_dropout_p)
        self.transformer = nn.ModuleList(TransformerBlock(d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p,
                                                          resid_dropout_p) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        # The published model uses the layer's default of 4 heads here, whatever n_heads is.
        self.dep_layer = DependencyAwareLayer(d_model)
        self.head = DualHead(s1_bits, s2_bits, d_model)
        self._init_weights(d_model)

    def _init_weights(self, d_model: int) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
                nn.init.normal_(module.weight, mean=0.0, std=d_model ** -0.5)

    def new_cache(self, max_len: int) -> DecodeCache:
        """An empty cache for decoding up to ``max_len`` positions with decode_s1/decode_s2(cache=...).

        It snapshots the weights (model.decoding's fused projections): make a new one after training."""
        return DecodeCache(self, max_len)

    def hidden_states(self, s1_ids, s2_ids, stamp=None, padding_mask=None, cache: DecodeCache | None = None):
        """History tokens [B, T] -> final hidden states [B, T, d_model] (what the heads read).

        With a cache the tokens are the T positions after the cached ones: all of them into an
        empty cache, then one per step; their keys and values are added to it.
        """
        if cache is not None:
            if self.training:
                raise ValueError("KV-cached decoding is for inference: call model.eval() first")
            if cache.length:
                if s1_ids.shape[1] != 1 or padding_mask is not None:
                    raise ValueError(f"a cached step takes one query and no padding mask after the prefill; "
                                     f"got {s1_ids.shape[1]} positions")
                return step_hidden(self, s1_ids, s2_ids, stamp, cache)
        x = self.embedding(s1_ids, s2_ids)
        if stamp is not None:
            x = x + self.time_emb(stamp)
        x = self.token_drop(x)
        layer_caches = cache.blocks if cache is not None else [None] * len(self.transformer)
        for block, layer_cache in zip(self.transformer, layer_caches):
            x = block(x, padding_mask, layer_cache)
        return self.norm(x)

    def decode_s1(self, s1_ids, s2_ids, stamp=None, padding_mask=None, cache: DecodeCache | None = None):
        """History tokens [B, T] -> (s1 logits [B, T, V1], hidden states [B, T, d_model]); ``cache`` as in
        hidden_states."""
        x = self.hidden_states(s1_ids, s2_ids, stamp, padding_mask, cache)
        return self.head.proj_s1(x), x

    def decode_s2(self, context, s1_ids, padding_mask=None, cache: DecodeCache | None = None):
        """s2 logits given the hidden states and the s1 tokens of the same positions.

        ``s1_ids`` may cover only the last position (one generation step). With a cache,
        ``context`` holds the hidden states decode_s1 returned for the positions it just added.
        """
        if cache is not None and cache.dep.length:
            return self.head.proj_s2(step_s2_hidden(self, context, s1_ids, cache))
        hidden = self.dep_layer(context, self.embedding.emb_s1(s1_ids), padding_mask,
                                None if cache is None else cache.dep)
        return self.head.proj_s2(hidden)

    def forward(self, s1_ids, s2_ids, stamp=None, padding_mask=None, use_teacher_forcing=False, s1_targets=None):
        """Next-token logits (s1_logits [B, T, V1], s2_logits [B, T, V2]).

        s2 is conditioned on ``s1_targets`` with teacher forcing, else on s1 sampled from the
        model's own s1 distribution (the published training recipe).
        """
        s1_logits, hidden = self.decode_s1(s1_ids, s2_ids, stamp, padding_mask)
        if use_teacher_forcing:
            if s1_targets is None:
                raise ValueError("use_teacher_forcing=True needs s1_targets")
            sibling = s1_targets
        else:
            probs = F.softmax(s1_logits.detach().float(), dim=-1)
            sibling = torch.multinomial(probs.reshape(-1, self.s1_vocab_size), 1).view(s1_ids.shape)
        return s1_logits, self.decode_s2(hidden, sibling, padding_mask)
