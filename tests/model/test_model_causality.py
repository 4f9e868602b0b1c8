"""Causality: input at position t never changes what the models compute for positions < t.

The tokenizer's encoder and decoder and the predictor's transformer are causal. So is the s2
dependency layer, in train AND eval mode: this is the deliberate difference from the reference
Kronos, whose s2 layer attended to later hidden states in eval mode (a leak into validation loss).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kronos_exp.model import blocks

T_CHANGE = 17  # the fixture sequences are 40 (tokenizer) and 39 (predictor) steps long


def perturbed_ids(ids: torch.Tensor, vocab: int, t: int, seed: int = 1) -> torch.Tensor:
    """ids with every position >= t replaced by a different token."""
    g = torch.Generator().manual_seed(seed)
    out = ids.clone()
    out[:, t:] = (ids[:, t:] + torch.randint(1, vocab, ids[:, t:].shape, generator=g)) % vocab
    return out


def assert_prefix_equal_suffix_differs(a: torch.Tensor, b: torch.Tensor, t: int, what: str):
    assert torch.equal(a[:, :t], b[:, :t]), f"{what}: positions < {t} changed"
    assert not torch.equal(a[:, t:], b[:, t:]), f"{what}: the change at {t} had no effect at all"


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_tokenizer_is_causal(tok, cases, mode):
    x = cases["x"]
    x2 = x.clone()
    x2[:, T_CHANGE:] = torch.randn(x2[:, T_CHANGE:].shape, generator=torch.Generator().manual_seed(0)) * 3
    getattr(tok, mode)()
    with torch.no_grad():
        for half in (True, False):
            a, b = tok.encode(x, half=half), tok.encode(x2, half=half)
            for i, (u, v) in enumerate(zip(a, b) if half else [(a, b)]):
                assert_prefix_equal_suffix_differs(u, v, T_CHANGE, f"encode(half={half}) part {i}")
        (z_pre, z), _, quantized, indices = tok(x)
        (z_pre2, z2), _, quantized2, indices2 = tok(x2)
        for name, u, v in [("z_pre", z_pre, z_pre2), ("z", z, z2), ("quantized", quantized, quantized2),
                           ("indices", indices, indices2)]:
            assert_prefix_equal_suffix_differs(u, v, T_CHANGE, name)
        s1, s2 = tok.encode(x, half=True)
        recon = tok.decode((s1, s2), half=True)
        recon2 = tok.decode((perturbed_ids(s1, 16, T_CHANGE), perturbed_ids(s2, 16, T_CHANGE)), half=True)
        assert_prefix_equal_suffix_differs(recon, recon2, T_CHANGE, "decode")


@pytest.mark.parametrize("with_padding_mask", [False, True], ids=["no_mask", "padding_mask"])
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("changed", ["s1_ids", "s2_ids", "stamp", "s1_targets"])
def test_predictor_is_causal(model, cases, mode, changed, with_padding_mask):
    assert all(v == 0.0 for k, v in model.config.items() if k.endswith("dropout_p"))
    inputs = dict(s1_ids=cases["s1_in"], s2_ids=cases["s2_in"], stamp=cases["stamp"][:, :-1],
                  s1_targets=cases["s1_out"])
    changed_inputs = dict(inputs)
    if changed == "stamp":
        stamp = inputs["stamp"].clone()
        stamp[:, T_CHANGE:, 0] = (stamp[:, T_CHANGE:, 0] + 7) % 60
        stamp[:, T_CHANGE:, 1] = (stamp[:, T_CHANGE:, 1] + 5) % 24
        changed_inputs["stamp"] = stamp
    else:
        changed_inputs[changed] = perturbed_ids(inputs[changed], 16, T_CHANGE)
    mask = torch.zeros(inputs["s1_ids"].shape, dtype=torch.bool) if with_padding_mask else None
    getattr(model, mode)()
    with torch.no_grad():
        a = model(**inputs, padding_mask=mask, use_teacher_forcing=True)
        b = model(**changed_inputs, padding_mask=mask, use_teacher_forcing=True)
    if changed == "s1_targets":  # the target only conditions s2, at its own position
        assert torch.equal(a[0], b[0])
    else:
        assert_prefix_equal_suffix_differs(a[0], b[0], T_CHANGE, f"s1 logits ({mode})")
    assert_prefix_equal_suffix_differs(a[1], b[1], T_CHANGE, f"s2 logits ({mode})")


def test_padding_mask_all_false_changes_nothing(model, cases):
    model.eval()
    args = (cases["s1_in"], cases["s2_in"], cases["stamp"][:, :-1])
    with torch.no_grad():
        plain = model(*args, use_teacher_forcing=True, s1_targets=cases["s1_out"])
        masked = model(*args, padding_mask=torch.zeros(cases["s1_in"].shape, dtype=torch.bool),
                       use_teacher_forcing=True, s1_targets=cases["s1_out"])
    torch.testing.assert_close(masked[0], plain[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(masked[1], plain[1], atol=1e-6, rtol=1e-6)


def test_the_check_catches_the_reference_eval_mode_leak(model, cases, monkeypatch):
    """With the reference's s2 layer (non-causal in eval mode) the causality check above fails."""
    def leaky_forward(self, query, key, value, padding_mask=None, cache=None):
        b, t, d = query.shape
        q, k = self.rotary(self._heads(self.q_proj(query)), self._heads(self.k_proj(key)))
        v = self._heads(self.v_proj(value))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.training)
        return self.resid_dropout(self.out_proj(out.transpose(1, 2).reshape(b, t, d)))

    monkeypatch.setattr(blocks.CrossAttention, "forward", leaky_forward)
    model.eval()
    s1, s2, stamp, targets = cases["s1_in"], cases["s2_in"], cases["stamp"][:, :-1], cases["s1_out"]
    with torch.no_grad():
        a = model(s1, s2, stamp, use_teacher_forcing=True, s1_targets=targets)
        b = model(s1, perturbed_ids(s2, 16, T_CHANGE), stamp, use_teacher_forcing=True, s1_targets=targets)
        # the leak: earlier s2 logits move with later inputs (through the later hidden states) ...
        assert torch.equal(a[0][:, :T_CHANGE], b[0][:, :T_CHANGE])
        assert not torch.equal(a[1][:, :T_CHANGE], b[1][:, :T_CHANGE])
        # ... and the leaky logits are not the fixture's (causal) expected ones
        assert (a[1] - cases["pred_s2_logits"]).abs().max() > 1e-3


def test_rotary_table_rotates_as_rotate_half_and_grows_by_doubling():
    """The cached cos/sin table gives the textbook rotation at any offset, and a generation past
    its end rebuilds it once, not at every step."""
    rotary = blocks.RotaryEmbedding(8)
    q, k = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)
    for offset in range(510, 530):
        got_q, got_k = rotary(q, k, offset)
        freqs = offset * rotary.inv_freq
        cos, sin = torch.cat((freqs, freqs)).cos(), torch.cat((freqs, freqs)).sin()
        rotate_half = lambda x: torch.cat((-x[..., 4:], x[..., :4]), dim=-1)  # noqa: E731
        torch.testing.assert_close(got_q, q * cos + rotate_half(q) * sin)
        torch.testing.assert_close(got_k, k * cos + rotate_half(k) * sin)
        if offset == 512:
            grown = rotary._table
    assert rotary._table is grown and grown[0].shape[0] == 1024
