"""Exact parity with the reference Kronos on tests/fixtures/parity (the checks of check_parity.py).

Tolerances are those of /work/shared/parity/check_parity.py: atol = rtol = 1e-4 for tensors, atol 1e-5
for losses, token ids exactly, forecasts atol 1e-3 / rtol 1e-4. The expected s2 logits are the causal
ones (the deliberate difference from the reference, see test_model_causality.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kronos_exp.forecasting import KronosPredictor


def assert_close(got, want, atol=1e-4, rtol=1e-4):
    got = torch.as_tensor(np.array(got) if isinstance(got, np.ndarray) else got).detach().to(torch.float64)
    want = torch.as_tensor(want).detach().to(torch.float64)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def assert_same_ids(got, want):
    got, want = torch.as_tensor(got).long(), torch.as_tensor(want).long()
    assert got.shape == want.shape
    mismatches = int((got != want).sum())
    assert mismatches == 0, f"{mismatches} token ids differ"


def test_fixture_loads_with_the_expected_parameter_counts(tok, model, meta):
    assert sum(p.numel() for p in tok.parameters()) == meta["tokenizer_params"] == 42862
    assert sum(p.numel() for p in model.parameters()) == meta["predictor_params"] == 33664


def test_tokenizer_forward_train_mode(tok, cases):
    tok.train()
    (z_pre, z), bsq_loss, quantized, indices = tok(cases["x"])
    assert_close(z_pre, cases["tok_z_pre"])
    assert_close(z, cases["tok_z"])
    assert_close(bsq_loss, cases["tok_bsq_loss"], atol=1e-5)
    assert_close(quantized, cases["tok_quantized"])
    assert_same_ids(indices, cases["tok_indices"])


def test_tokenizer_forward_has_gradients(tok, cases):
    """The straight-through quantizer lets the reconstruction and BSQ losses reach the encoder."""
    tok.train()
    (z_pre, z), bsq_loss, _, _ = tok(cases["x"])
    loss = F.mse_loss(z_pre, cases["x"]) + F.mse_loss(z, cases["x"]) + bsq_loss
    loss.backward()
    grads = {name: p.grad for name, p in tok.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    assert grads["embed.weight"].abs().sum() > 0
    assert grads["encoder.0.self_attn.q_proj.weight"].abs().sum() > 0


def test_tokenizer_encode_exact_ids(tok, cases):
    tok.eval()
    with torch.no_grad():
        s1, s2 = tok.encode(cases["x"], half=True)
        assert_same_ids(s1, cases["enc_s1"])
        assert_same_ids(s2, cases["enc_s2"])
        assert_same_ids(tok.encode(cases["x"], half=False), cases["enc_full"])


def test_tokenizer_decode(tok, cases):
    tok.eval()
    with torch.no_grad():
        assert_close(tok.decode((cases["enc_s1"], cases["enc_s2"]), half=True), cases["dec"])


def test_predictor_logits_and_loss_with_teacher_forcing(model, cases):
    model.eval()
    with torch.no_grad():
        s1_logits, s2_logits = model(cases["s1_in"], cases["s2_in"], cases["stamp"][:, :-1],
                                     use_teacher_forcing=True, s1_targets=cases["s1_out"])
    assert_close(s1_logits, cases["pred_s1_logits"])
    assert_close(s2_logits, cases["pred_s2_logits"])
    ce_s1 = F.cross_entropy(s1_logits.reshape(-1, s1_logits.shape[-1]), cases["s1_out"].reshape(-1))
    ce_s2 = F.cross_entropy(s2_logits.reshape(-1, s2_logits.shape[-1]), cases["s2_out"].reshape(-1))
    assert_close(ce_s1, cases["pred_ce_s1"], atol=1e-5)
    assert_close(ce_s2, cases["pred_ce_s2"], atol=1e-5)
    assert_close((ce_s1 + ce_s2) / 2, cases["pred_loss"], atol=1e-5)


@pytest.mark.parametrize("which", [0, 1])
def test_greedy_forecast(tok, model, cases, meta, which):
    case = cases["forecasts"][which]
    ctx, columns = case["context"], list(case["columns"])
    df = pd.DataFrame(case["values"].numpy().copy(), columns=columns)
    ts = pd.Series(pd.to_datetime(case["timestamps"]))
    pred_len = len(ts) - ctx
    assert pred_len == meta["pred_len"]
    # one context shorter than max_context, one longer (the sliding window)
    assert (ctx < meta["max_context"]) if which == 0 else (ctx > meta["max_context"])
    predictor = KronosPredictor(model, tok, device="cpu", max_context=meta["max_context"], clip=5)
    torch.manual_seed(0)
    out = predictor.predict(df=df.iloc[:ctx].reset_index(drop=True),
                            x_timestamp=ts.iloc[:ctx].reset_index(drop=True),
                            y_timestamp=ts.iloc[ctx:].reset_index(drop=True),
                            pred_len=pred_len, T=1.0, top_k=1, top_p=1.0, sample_count=1, verbose=False)
    assert isinstance(out, pd.DataFrame)
    assert_close(out[columns].to_numpy(dtype=np.float64), case["expected"], atol=1e-3, rtol=1e-4)
