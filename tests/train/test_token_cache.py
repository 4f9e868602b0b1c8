"""The predictor phase encodes each window once per run (within the cache bound), in fp32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kronos_exp.schemas import PredictorConfig
from kronos_exp.data.windows import WindowDataset
from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.phases import PredictorPhase
from kronos_exp.train.token_cache import TokenWindows, tokenize_within
from kronos_exp.train import FitSettings, autocast, fit

TOKENIZER = dict(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, ffn_dropout_p=0.0,
                 attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4, beta=0.05, gamma0=1.0, gamma=1.1,
                 zeta=0.05, group_size=4)
PREDICTOR = dict(s1_bits=4, s2_bits=4, n_layers=1, d_model=16, n_heads=2, ff_dim=32, ffn_dropout_p=0.0,
                 attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)


def _windows(n_rows, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_rows, 6)).astype(np.float32).cumsum(0)
    stamps = np.stack([rng.integers(0, n, n_rows) for n in (60, 24, 7, 32, 13)], 1).astype(np.float32)
    return WindowDataset([values], [stamps], 8, 2)


class CountingTokenizer(KronosTokenizer):
    """The real tokenizer, counting the windows it encodes."""

    encoded = 0

    def encode(self, x, half=False):
        CountingTokenizer.encoded += x.shape[0]
        return super().encode(x, half=half)


def _phase() -> PredictorPhase:
    torch.manual_seed(0)
    phase = PredictorPhase(PredictorConfig())
    phase.tokenizer = CountingTokenizer(**TOKENIZER).eval().requires_grad_(False)
    phase.teacher_forcing = True
    return phase


def test_cached_batches_hold_the_tokens_and_stamps_of_the_windows():
    phase, windows = _phase(), _windows(80, 0)
    cached = TokenWindows(windows, phase.encode, 4, 4, chunk=16)
    idx = [3, 0, 40]
    x, stamp = windows.batch(idx)
    s1, s2 = phase.encode(x)
    c1, c2, cstamp = cached.batch(idx)
    assert torch.equal(c1.long(), s1) and torch.equal(c2.long(), s2)
    assert torch.equal(cstamp.float(), stamp)


def test_windows_are_encoded_once_per_run_within_the_bound_and_per_epoch_past_it():
    train, val = _windows(90, 0), _windows(40, 1)
    s = FitSettings(epochs=3, lr=1e-3, batch_size=16, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.1,
                    grad_clip=1.0, accumulation_steps=1, log_interval=100, device=torch.device("cpu"))
    for budget_mb, expected in ((1.0, len(train) + len(val)), (0.0, 3 * (len(train) // 16 * 16 + len(val)))):
        phase = _phase()
        sets = tokenize_within(budget_mb, {"train": train, "val": val}, phase.encode, 4, 4)
        CountingTokenizer.encoded = 0
        result = fit(Kronos(**PREDICTOR), phase, sets["train"], sets["val"], s, log_metrics=lambda *a: None,
                     on_best=lambda *a: None)
        assert np.isfinite(result.best_val_loss)
        encoded_before_fit = (len(train) + len(val)) if budget_mb else 0
        assert CountingTokenizer.encoded + encoded_before_fit == expected


def test_the_frozen_tokenizer_encodes_in_fp32_inside_the_loops_autocast():
    phase, windows = _phase(), _windows(400, 2)
    x, _ = windows.batch(np.arange(len(windows)))
    reference = phase.encode(x)
    with autocast(torch.device("cpu"), "bf16"):
        inside = phase.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(reference, inside))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_cache_lives_on_the_device_and_the_loop_trains_in_bf16():
    cuda = torch.device("cuda")
    phase, train, val = _phase(), _windows(90, 0), _windows(40, 1)
    phase.tokenizer.to(cuda)
    sets = tokenize_within(1.0, {"train": train, "val": val}, phase.encode, 4, 4, device=cuda)
    assert sets["train"].on_device and sets["train"].batch([0, 1])[0].is_cuda
    s = FitSettings(epochs=1, lr=1e-3, batch_size=16, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.1,
                    grad_clip=1.0, accumulation_steps=1, log_interval=2, device=cuda, precision="bf16")
    result = fit(Kronos(**PREDICTOR), phase, sets["train"], sets["val"], s, log_metrics=lambda *a: None,
                 on_best=lambda *a: None)
    assert np.isfinite(result.best_val_loss)
