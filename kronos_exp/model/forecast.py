"""Forecasting with a tokenizer + predictor pair: sampling, autoregressive generation, KronosPredictor."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import trange

from ..data import time_features
from .predictor import Kronos
from .tokenizer import KronosTokenizer

PRICE_COLUMNS = ["open", "high", "low", "close"]
COLUMNS = PRICE_COLUMNS + ["volume", "amount"]


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


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """One token id per row of logits [N, V] -> [N, 1], from the distribution filter_logits keeps.

    Drawn the way torch.multinomial draws one sample, argmax(p / E) with E ~ Exp(1) per token, but
    without its validity checks (a softmax is valid) and the host syncs they cost, and for nucleus
    sampling in the sorted order the filter already computed: a generation step draws twice, so
    these ops are a tenth of a Kronos-mini step on a CPU.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k > 0 or top_p >= 1.0:
        probs, order = F.softmax(filter_logits(logits, top_k), dim=-1), None
    else:
        probs, order, dropped = _nucleus(logits, top_p)
        probs = probs.masked_fill(dropped, 0.0)
    choice = (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1, keepdim=True)
    return choice if order is None else order.gather(-1, choice)


@torch.no_grad()
def generate_tokens(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamps: torch.Tensor, pred_len: int,
                    max_context: int, T: float = 1.0, top_k: int = 0, top_p: float = 0.99, sample_count: int = 1,
                    verbose: bool = False, use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
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
        end = history + i
        step_cache = cache if i < cached_steps else None
        if step_cache is None:
            start = max(0, end - max_context)
            hidden = model.hidden_states(s1[:, start:end], s2[:, start:end], stamps[:, start:end])
        elif i:  # the prefill above computed step 0
            hidden = model.hidden_states(s1[:, end - 1:end], s2[:, end - 1:end], stamps[:, end - 1:end],
                                         cache=step_cache)
        # Only the newest position's s1 logits are sampled (the s2 layer reads every hidden state).
        next_s1 = sample_next(model.head.proj_s1(hidden[:, -1]), T, top_k, top_p)
        s2_logits = model.decode_s2(hidden, next_s1, cache=step_cache)
        next_s2 = sample_next(s2_logits[:, -1], T, top_k, top_p)
        s1, s2 = torch.cat([s1, next_s1], dim=1), torch.cat([s2, next_s2], dim=1)
    return s1, s2


@torch.no_grad()
def generate(tokenizer: KronosTokenizer, model: Kronos, x: torch.Tensor, x_stamp: torch.Tensor,
             y_stamp: torch.Tensor, pred_len: int, max_context: int, clip: float = 5.0, T: float = 1.0,
             top_k: int = 0, top_p: float = 0.99, sample_count: int = 1, verbose: bool = False,
             use_cache: bool = True) -> torch.Tensor:
    """Normalised history x [B, L, 6] -> normalised forecast [B, pred_len, 6], averaged over samples.

    The predictor sees at most ``max_context`` tokens (a sliding window); the history is
    tokenized whole, since the tokenizer's causal encoder reads every earlier step.
    ``use_cache=False`` recomputes the window at every step (the reference for the KV cache).
    """
    s1, s2 = tokenizer.encode(torch.clamp(x, -clip, clip), half=True)  # [B, L] each
    stamps = torch.cat([x_stamp, y_stamp], dim=1)
    s1, s2 = generate_tokens(model, s1, s2, stamps, pred_len, max_context, T, top_k, top_p, sample_count, verbose,
                             use_cache)
    # The tokenizer decodes the predictor's window, or all the forecast when it is longer than that.
    start = max(0, s1.shape[1] - max(max_context, pred_len))
    decoded = tokenizer.decode((s1[:, start:], s2[:, start:]), half=True)[:, -pred_len:]
    return decoded.reshape(-1, sample_count, pred_len, decoded.shape[-1]).mean(dim=1)


class KronosPredictor:
    """Forecast OHLCV DataFrames with a tokenizer + predictor pair.

    Each series is normalised with its own history's mean and std, forecast in token space and
    mapped back to prices. Fill rules: no ``volume`` column -> volume and amount are 0; no
    ``amount`` column -> volume x mean(open, high, low, close). NaNs are an error.
    """

    def __init__(self, model: Kronos, tokenizer: KronosTokenizer, device: str | None = None,
                 max_context: int = 512, clip: float = 5):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.max_context = max_context
        self.clip = clip

    def _prepare(self, df: pd.DataFrame, x_timestamp, y_timestamp, pred_len: int, label: str):
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{label}: df must be a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in PRICE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{label}: df lacks price columns {missing}; it needs {PRICE_COLUMNS} "
                             f"(volume and amount are optional), it has {list(df.columns)}")
        if len(df) == 0:
            raise ValueError(f"{label}: df is empty")
        if len(x_timestamp) != len(df):
            raise ValueError(f"{label}: x_timestamp has {len(x_timestamp)} entries but df has {len(df)} rows")
        if len(y_timestamp) != pred_len:
            raise ValueError(f"{label}: y_timestamp has {len(y_timestamp)} entries but pred_len={pred_len}")
        df = df.copy()
        if "volume" not in df.columns:
            df["volume"], df["amount"] = 0.0, 0.0
        elif "amount" not in df.columns:
            df["amount"] = df["volume"] * df[PRICE_COLUMNS].mean(axis=1)
        values = df[COLUMNS].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            rows, cols = np.nonzero(bad)
            where = ", ".join(f"{COLUMNS[c]}@row {r}" for r, c in list(zip(rows, cols))[:5])
            raise ValueError(f"{label}: df has {int(bad.sum())} NaN/inf values ({where}); fill or drop them first")
        # float32 statistics, as the published KronosPredictor computes them (its forecasts are
        # matched exactly); training windows use float64 (data.windows.lookback_normalize).
        values = values.astype(np.float32)
        mean, std = values.mean(axis=0), values.std(axis=0)
        x = np.clip((values - mean) / (std + 1e-5), -self.clip, self.clip)
        x_stamp = time_features(pd.Series(pd.to_datetime(x_timestamp)))
        y_stamp = time_features(pd.Series(pd.to_datetime(y_timestamp)))
        return x, x_stamp, y_stamp, mean, std

    def predict_batch(self, df_list, x_timestamp_list, y_timestamp_list, pred_len: int, T: float = 1.0,
                      top_k: int = 0, top_p: float = 0.9, sample_count: int = 1, verbose: bool = True):
        """Forecast several series; series with the same history length share one batch."""
        if not (len(df_list) == len(x_timestamp_list) == len(y_timestamp_list)):
            raise ValueError(f"df_list, x_timestamp_list and y_timestamp_list differ in length: "
                             f"{len(df_list)}, {len(x_timestamp_list)}, {len(y_timestamp_list)}")
        if pred_len < 1:
            raise ValueError(f"pred_len must be >= 1, got {pred_len}")
        prepared = [self._prepare(df, xt, yt, pred_len, f"series {i}")
                    for i, (df, xt, yt) in enumerate(zip(df_list, x_timestamp_list, y_timestamp_list))]
        by_length = defaultdict(list)
        for i, p in enumerate(prepared):
            by_length[len(p[0])].append(i)
        forecasts = [None] * len(prepared)
        for indices in by_length.values():
            def stack(j):
                return torch.from_numpy(np.stack([prepared[i][j] for i in indices])).to(self.device)
            normalised = generate(self.tokenizer, self.model, stack(0), stack(1), stack(2), pred_len,
                                  self.max_context, self.clip, T, top_k, top_p, sample_count, verbose)
            for i, pred in zip(indices, normalised.float().cpu().numpy()):
                mean, std = prepared[i][3], prepared[i][4]
                forecasts[i] = pd.DataFrame(pred * (std + 1e-5) + mean, columns=COLUMNS,
                                            index=pd.DatetimeIndex(pd.to_datetime(y_timestamp_list[i])))
        return forecasts

    def predict(self, df: pd.DataFrame, x_timestamp, y_timestamp, pred_len: int, T: float = 1.0, top_k: int = 0,
                top_p: float = 0.9, sample_count: int = 1, verbose: bool = True) -> pd.DataFrame:
        """Forecast one series: a DataFrame of open/high/low/close/volume/amount indexed by y_timestamp."""
        return self.predict_batch([df], [x_timestamp], [y_timestamp], pred_len, T, top_k, top_p,
                                  sample_count, verbose)[0]
