"""The predictor phase's windows as tokens, encoded once per run by the frozen tokenizer.

Re-encoding every window every epoch costs the predictor phase about as much as its own forward
pass. Tokens are small (two int16 per step, plus the calendar stamp as uint8), so within
``predictor.token_cache_mb`` every window is encoded once, in fp32, when the phase starts; past
the bound the batches stay raw windows and the phase encodes them on the fly. The cache lives in
memory for one phase run only, built from this run's tokenizer and data, so it is never stale.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # x [B, T, 6] -> (s1, s2) [B, T]


def token_dtype(bits: int) -> torch.dtype:
    return torch.int16 if bits <= 15 else torch.int32


def cache_bytes(n_windows: int, window: int, s1_bits: int, s2_bits: int) -> int:
    per_step = token_dtype(s1_bits).itemsize + token_dtype(s2_bits).itemsize + 5  # + uint8 stamp [5]
    return n_windows * window * per_step


class TokenWindows:
    """``batch(indices) -> (s1, s2, stamp)`` for every window of a WindowDataset, encoded once."""

    def __init__(self, windows, encode: Encoder, s1_bits: int, s2_bits: int, chunk: int = 64,
                 device: torch.device | str = "cpu"):
        n = len(windows)
        # Encoded ``chunk`` windows at a time: 256 at once raised the peak RSS at config P by 250 MB.
        # On a GPU the cache lives there: a batch is then a gather on the device, with no host work.
        self.s1 = torch.empty(n, windows.window, dtype=token_dtype(s1_bits), device=device)
        self.s2 = torch.empty(n, windows.window, dtype=token_dtype(s2_bits), device=device)
        self.stamp = torch.empty(n, windows.window, 5, dtype=torch.uint8, device=device)  # calendar fields < 256
        for lo in range(0, n, chunk):
            idx = np.arange(lo, min(lo + chunk, n))
            x, stamp = windows.batch(idx)
            s1, s2 = encode(x)
            self.s1[lo:lo + len(idx)] = s1.to(device, self.s1.dtype)
            self.s2[lo:lo + len(idx)] = s2.to(device, self.s2.dtype)
            self.stamp[lo:lo + len(idx)] = stamp.to(device, torch.uint8)

    def __len__(self) -> int:
        return len(self.s1)

    @property
    def on_device(self) -> bool:
        return self.s1.device.type != "cpu"

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.s1.device, non_blocking=True)
        return self.s1[idx], self.s2[idx], self.stamp[idx]


def tokenize_within(budget_mb: float, splits: dict[str, object], encode: Encoder, s1_bits: int, s2_bits: int,
                    device: torch.device | str = "cpu") -> dict:
    """Each split as TokenWindows (held on ``device``) while the running total fits ``budget_mb``,
    else left raw."""
    left = budget_mb * 2 ** 20
    out = {}
    for name, windows in splits.items():
        need = cache_bytes(len(windows), windows.window, s1_bits, s2_bits)
        if need <= left:
            out[name] = TokenWindows(windows, encode, s1_bits, s2_bits, device=device)
            left -= need
        else:
            log.info("predictor: %s tokens (%.1f MB) exceed what is left of predictor.token_cache_mb=%g; "
                     "encoding them on the fly", name, need / 2 ** 20, budget_mb)
            out[name] = windows
    return out
