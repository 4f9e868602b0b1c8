"""Autoregressive generation with a tokenizer + predictor pair: sampling a token from logits, the
token loop (KV-cached while the window does not slide), and normalised series in and out.

Tensors only: DataFrames in and out (KronosPredictor) are kronos_exp.forecasting's."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import trange

from ..model import Kronos, KronosTokenizer
from ..schemas import EvalConfig
from ..window import WindowSpec

# The sampling defaults (the published KronosPredictor.predict's: temperature, top-k (0: off), nucleus
# mass), written once as the eval settings' defaults; KronosPredictor, the pyfunc signature and the
# forecast command take them from here.
T_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT = EvalConfig.T, EvalConfig.top_k, EvalConfig.top_p


def _nucleus(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probabilities sorted in descending order [N, V], that order, and which of the sorted ones
    [N, V] fall outside the smallest set with mass >= top_p.

    A token is kept while the mass before it is still short of top_p (``<=`` there would keep one
    more token on an exact tie), and the cumulative mass only grows, so the kept ones lead."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    kept = (probs.cumsum(dim=-1) < top_p).sum(dim=-1, keepdim=True) + 1
    return probs, order, torch.arange(probs.shape[-1], device=probs.device) >= kept


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask all but the top_k logits; with top_k=0, all outside the smallest set with mass >= top_p.

    As in the published Kronos sampler, top_k > 0 takes precedence: top_p is then not applied."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        _, order, dropped = _nucleus(logits, top_p)
        return logits.masked_fill(dropped.scatter(-1, order, dropped), float("-inf"))
    return logits.clone()


class GenerationStopped(RuntimeError):
    """The caller's ``stop`` asked the token loop to end (a deadline passed, the server is stopping)."""


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token id per row of logits [N, V] -> [N, 1], from the distribution filter_logits keeps.

    Drawn the way torch.multinomial draws one sample, argmax(p / E) with E ~ Exp(1) per token, but
    without its validity checks (a softmax is valid) and the host syncs they cost, and for nucleus
    sampling in the sorted order the filter already computed: a generation step draws twice, so
    these ops are a tenth of a Kronos-mini step on a CPU. ``generator`` (None: torch's global one)
    gives a request its own random stream, so concurrent seeded requests do not share one.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k > 0 or top_p >= 1.0:
        probs, order = F.softmax(filter_logits(logits, top_k), dim=-1), None
    else:
        probs, order, dropped = _nucleus(logits, top_p)
        probs = probs.masked_fill(dropped, 0.0)
    choice = (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1, keepdim=True)
    return choice if order is None else order.gather(-1, choice)


@torch.no_grad()
def generate_tokens(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamps: torch.Tensor, pred_len: int,
                    max_context: int, T: float = T_DEFAULT, top_k: int = TOP_K_DEFAULT, top_p: float = TOP_P_DEFAULT,
                    sample_count: int = 1, verbose: bool = False, use_cache: bool = True,
                    generator: Optional[torch.Generator] = None,
                    stop: Optional[Callable[[], str]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """History tokens s1, s2 [B, L] -> (s1, s2) [B * sample_count, L + pred_len], the history included.

    ``stamps`` [B, L + pred_len, 5] are the calendar features of the history and forecast steps;
    the samples of one series are adjacent rows. Each step the predictor sees the newest
    ``max_context`` tokens, with positions counted from the window's start.

    While the window still starts at the first token, the keys and values of earlier positions do
    not change, so with ``use_cache`` they are kept (a KV cache, the history computed once and
    shared by a series' samples) and a step computes only the newest position. Once the window
    slides, every position's hidden state changes (the oldest token leaves its attention and the
    rotary positions shift), so those steps recompute the whole window, as ``use_cache=False`` does
    at every step. Both compute the same logits (up to float rounding), hence the same tokens.

    ``stop`` is asked before each step; a non-empty answer (why) ends the loop with GenerationStopped.
    """
    def repeat(t):  # [B, ...] -> [B * sample_count, ...], samples of one series adjacent
        return t.repeat_interleave(sample_count, dim=0)

    history = s1.shape[1]
    # Steps whose window [0, history + i) fits in max_context: the cached positions stay valid.
    cached_steps = max(0, min(pred_len, max_context - history + 1)) if use_cache else 0
    cache = None
    if cached_steps:
        cache = model.new_cache(history + cached_steps - 1)
        hidden = model.hidden_states(s1, s2, stamps[:, :history], cache=cache)
        cache.repeat_interleave(sample_count)
        hidden = repeat(hidden)
    s1, s2, stamps = repeat(s1), repeat(s2), repeat(stamps)
    steps = trange(pred_len, desc="forecast", leave=False) if verbose else range(pred_len)
    for i in steps:
        why = stop() if stop else ""
        if why:
            raise GenerationStopped(why)
        end = history + i
        step_cache = cache if i < cached_steps else None
        if step_cache is None:
            start = max(0, end - max_context)
            hidden = model.hidden_states(s1[:, start:end], s2[:, start:end], stamps[:, start:end])
        elif i:  # the prefill above computed step 0
            hidden = model.hidden_states(s1[:, end - 1:end], s2[:, end - 1:end], stamps[:, end - 1:end],
                                         cache=step_cache)
        # Only the newest position's s1 logits are sampled (the s2 layer reads every hidden state).
        next_s1 = sample_next(model.head.proj_s1(hidden[:, -1]), T, top_k, top_p, generator)
        s2_logits = model.decode_s2(hidden, next_s1, cache=step_cache)
        next_s2 = sample_next(s2_logits[:, -1], T, top_k, top_p, generator)
        s1, s2 = torch.cat([s1, next_s1], dim=1), torch.cat([s2, next_s2], dim=1)
    return s1, s2


@torch.no_grad()
def generate(tokenizer: KronosTokenizer, model: Kronos, x: torch.Tensor, x_stamp: torch.Tensor,
             y_stamp: torch.Tensor, pred_len: int, max_context: int, clip: float = WindowSpec.clip,
             T: float = T_DEFAULT, top_k: int = TOP_K_DEFAULT, top_p: float = TOP_P_DEFAULT, sample_count: int = 1,
             verbose: bool = False, use_cache: bool = True, generator: Optional[torch.Generator] = None,
             stop: Optional[Callable[[], str]] = None) -> torch.Tensor:
    """Normalised history x [B, L, 6] -> normalised forecast [B, pred_len, 6], averaged over samples.

    The predictor sees at most ``max_context`` tokens (a sliding window); the history is
    tokenized whole, since the tokenizer's causal encoder reads every earlier step.
    ``use_cache=False`` recomputes the window at every step (the reference for the KV cache).
    """
    s1, s2 = tokenizer.encode(torch.clamp(x, -clip, clip), half=True)  # [B, L] each
    stamps = torch.cat([x_stamp, y_stamp], dim=1)
    s1, s2 = generate_tokens(model, s1, s2, stamps, pred_len, max_context, T, top_k, top_p, sample_count, verbose,
                             use_cache, generator, stop)
    # The tokenizer decodes the predictor's window, or all the forecast when it is longer than that.
    start = max(0, s1.shape[1] - max(max_context, pred_len))
    decoded = tokenizer.decode((s1[:, start:], s2[:, start:]), half=True)[:, -pred_len:]
    return decoded.reshape(-1, sample_count, pred_len, decoded.shape[-1]).mean(dim=1)
