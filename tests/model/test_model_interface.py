"""The published Kronos interface: names, signatures and return structures."""
from __future__ import annotations

import inspect

import pytest
import torch

import kronos_exp.forecasting as kforecasting
import kronos_exp.model as kmodel
from kronos_exp.forecasting import KronosPredictor
from kronos_exp.model import Kronos, KronosTokenizer


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_packages_export_the_three_public_classes():
    for name in ("KronosTokenizer", "Kronos"):
        assert name in kmodel.__all__
    assert kmodel.KronosTokenizer is KronosTokenizer and kmodel.Kronos is Kronos
    assert "KronosPredictor" in kforecasting.__all__ and kforecasting.KronosPredictor is KronosPredictor


def test_constructor_argument_names_are_the_published_ones():
    assert params(KronosTokenizer.__init__) == [
        "d_in", "d_model", "n_heads", "ff_dim", "n_enc_layers", "n_dec_layers", "ffn_dropout_p",
        "attn_dropout_p", "resid_dropout_p", "s1_bits", "s2_bits", "beta", "gamma0", "gamma", "zeta", "group_size"]
    assert params(Kronos.__init__) == [
        "s1_bits", "s2_bits", "n_layers", "d_model", "n_heads", "ff_dim", "ffn_dropout_p", "attn_dropout_p",
        "resid_dropout_p", "token_dropout_p", "learn_te"]
    # the published five, then lookback (None: the whole history, as published)
    assert params(KronosPredictor.__init__) == ["model", "tokenizer", "device", "max_context", "clip", "lookback"]
    assert defaults(KronosPredictor.__init__)["lookback"] is None
    assert defaults(KronosPredictor.__init__)["max_context"] == 512
    assert defaults(KronosPredictor.__init__)["clip"] == 5


def test_method_signatures_are_the_published_ones():
    assert params(KronosTokenizer.forward) == ["x"]
    assert params(KronosTokenizer.encode) == ["x", "half"] and defaults(KronosTokenizer.encode) == {"half": False}
    assert params(KronosTokenizer.decode)[1:] == ["half"] and defaults(KronosTokenizer.decode) == {"half": False}
    assert params(Kronos.forward) == ["s1_ids", "s2_ids", "stamp", "padding_mask", "use_teacher_forcing",
                                      "s1_targets"]
    assert defaults(Kronos.forward) == {"stamp": None, "padding_mask": None, "use_teacher_forcing": False,
                                        "s1_targets": None}
    # plus an optional KV cache for generation
    assert params(Kronos.decode_s1) == ["s1_ids", "s2_ids", "stamp", "padding_mask", "cache"]
    assert params(Kronos.decode_s2) == ["context", "s1_ids", "padding_mask", "cache"]
    assert defaults(Kronos.decode_s1)["cache"] is None and defaults(Kronos.decode_s2)["cache"] is None
    for method in (KronosPredictor.predict, KronosPredictor.predict_batch):
        assert params(method)[-6:] == ["pred_len", "T", "top_k", "top_p", "sample_count", "verbose"]
    assert params(KronosPredictor.predict)[:3] == ["df", "x_timestamp", "y_timestamp"]
    assert params(KronosPredictor.predict_batch)[:3] == ["df_list", "x_timestamp_list", "y_timestamp_list"]
    assert defaults(KronosPredictor.predict) == {"T": 1.0, "top_k": 0, "top_p": 0.9, "sample_count": 1,
                                                 "verbose": True}


def test_tokenizer_call_encode_decode_shapes(make_tokenizer):
    tok = make_tokenizer(s1_bits=4, s2_bits=4)
    x = torch.randn(2, 7, 6)
    (z_pre, z), bsq_loss, quantized, indices = tok(x)
    assert z_pre.shape == z.shape == (2, 7, 6)
    assert bsq_loss.shape == () and torch.isfinite(bsq_loss)
    assert quantized.shape == (2, 7, 8)
    # the code is the signs on the unit sphere: every entry is +-1/sqrt(8)
    assert torch.equal(quantized.abs(), torch.full_like(quantized, 8 ** -0.5))
    assert indices.shape == (2, 7) and indices.dtype == torch.long

    tok.eval()
    with torch.no_grad():
        s1, s2 = tok.encode(x, half=True)
        full = tok.encode(x, half=False)
        assert torch.equal(tok.encode(x), full)  # half defaults to False
        assert s1.shape == s2.shape == full.shape == (2, 7)
        assert int(s1.max()) < 16 and int(s2.max()) < 16 and int(full.max()) < 256
        # bit i of a token weighs 2**i and s1 holds the first s1_bits bits
        assert torch.equal(full, s1 + 16 * s2)
        assert torch.equal(indices, full)
        # decoding all bits from one id or from the (s1, s2) pair is the same code
        assert torch.equal(tok.decode((s1, s2), half=True), tok.decode(full, half=False))
        assert tok.decode(full).shape == (2, 7, 6)
        # the ids read back to exactly the quantized code
        assert torch.equal(tok.indices_to_bits(full), quantized)


def test_predictor_forward_decode_s1_decode_s2(make_predictor, random_stamp):
    model = make_predictor(s1_bits=3, s2_bits=5).eval()
    s1 = torch.randint(0, 8, (2, 9))
    s2 = torch.randint(0, 32, (2, 9))
    target = torch.randint(0, 8, (2, 9))
    stamp = random_stamp(2, 9)
    with torch.no_grad():
        s1_logits, s2_logits = model(s1, s2, stamp, use_teacher_forcing=True, s1_targets=target)
        assert s1_logits.shape == (2, 9, 8) and s2_logits.shape == (2, 9, 32)
        logits1, hidden = model.decode_s1(s1, s2, stamp)
        assert torch.equal(logits1, s1_logits) and hidden.shape == (2, 9, 16)
        assert torch.equal(model.decode_s2(hidden, target), s2_logits)
        # without a stamp the calendar embedding is left out
        no_stamp, _ = model(s1, s2, use_teacher_forcing=True, s1_targets=target)
        assert no_stamp.shape == (2, 9, 8) and not torch.equal(no_stamp, s1_logits)
        # without teacher forcing s2 is conditioned on s1 sampled from the model
        torch.manual_seed(0)
        sampled = model(s1, s2, stamp)
        assert sampled[0].shape == (2, 9, 8) and sampled[1].shape == (2, 9, 32)
        assert torch.equal(sampled[0], s1_logits)
        # one generation step: the s1 token of the last position only
        last = model.decode_s2(hidden, target[:, -1:])
        assert last.shape == (2, 1, 32)
    with pytest.raises(ValueError, match="s1_targets"):
        model(s1, s2, stamp, use_teacher_forcing=True)


def test_group_size_must_divide_the_code_length(make_tokenizer):
    with pytest.raises(ValueError, match="group_size=4"):
        make_tokenizer(s1_bits=5, s2_bits=5, group_size=4)
    make_tokenizer(s1_bits=5, s2_bits=5, group_size=5)
