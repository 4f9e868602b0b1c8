"""The CPU fast paths of the model compute what the plain formulations compute (issue 30): where
a step's time went outside its matmuls on a CPU, each replacement is checked against the original."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kronos_exp.model import KronosTokenizer
from kronos_exp.model.blocks import Dropout, dropout, keep_mask, rms_norm
from kronos_exp.model.losses import token_cross_entropy

TINY_TOKENIZER = dict(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, ffn_dropout_p=0.0,
                      attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=3, s2_bits=3, beta=0.05, gamma0=1.0,
                      gamma=1.1, zeta=0.05, group_size=3)


def test_dropout_keeps_one_minus_p_of_the_elements_scaled_by_its_inverse():
    x = torch.randn(64, 71, 256)
    torch.manual_seed(0)
    out = dropout(x, 0.2)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    torch.testing.assert_close(out[kept], x[kept] / 0.8)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.2), out)  # the seed decides the mask


def test_keep_masks_keep_one_minus_p_independently_from_every_16_bits():
    torch.manual_seed(0)
    for p in (0.05, 0.2, 0.5, 0.9):
        kept = keep_mask(torch.Size((1001, 37)), p).flatten()  # a size no multiple of 4: a draw's bits go to 4 elements
        assert kept.dtype == torch.bool and kept.shape == (1001 * 37,)
        assert abs(kept.float().mean().item() - (1 - p)) < 0.01, p
        for k in range(4):  # each 16-bit quarter of the 64-bit draws keeps at the same rate
            assert abs(kept[k::4].float().mean().item() - (1 - p)) < 0.02, (p, k)
        both = (kept[:-1] & kept[1:]).float().mean().item()  # neighbours (quarters of one draw) independent
        assert abs(both - (1 - p) ** 2) < 0.01, p
    assert keep_mask(torch.Size((3, 5)), 0.0).all() and not keep_mask(torch.Size((3, 5)), 1.0).any()


def test_dropout_gradient_is_the_mask_scaled():
    x = torch.randn(8, 32, requires_grad=True)
    out = dropout(x, 0.5)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)


def test_dropout_module_is_identity_in_eval_and_at_p_zero():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    module = Dropout(0.3)
    assert isinstance(module, nn.Dropout) and module.state_dict() == {}
    assert torch.equal(module.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert module.train()(x).dtype == torch.bfloat16


def test_rms_norm_in_fp32_equals_the_formula():
    torch.manual_seed(0)
    x, w = torch.randn(4, 9, 32), torch.rand(32)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(rms_norm(x, w, 1e-5), expected, atol=1e-6, rtol=1e-6)


def test_rms_norm_keeps_a_bf16_input_bf16():
    """A bf16 activation came back fp32 (the fp32 scale promoted it), so each matmul after the norm
    cast its own bf16 copy; it now comes back bf16, normalised in fp32 all the same."""
    torch.manual_seed(0)
    x, w = torch.randn(4, 9, 32).bfloat16(), torch.rand(32)
    out = rms_norm(x, w, 1e-5)
    assert out.dtype == torch.bfloat16
    xf = x.float()
    torch.testing.assert_close(out.float(), xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w,
                               atol=2e-2, rtol=2e-2)


def test_tokenizer_decodes_both_codes_in_one_batch_as_two_passes_would():
    torch.manual_seed(0)
    model = KronosTokenizer(**TINY_TOKENIZER).eval()
    x = torch.randn(3, 10, 6)
    (z_pre, z), _, quantized, _ = model(x)
    s1 = model.tokenizer.s1_bits
    torch.testing.assert_close(z_pre, model._decode_latent(model.post_quant_embed_pre(quantized[..., :s1])))
    torch.testing.assert_close(z, model._decode_latent(model.post_quant_embed(quantized)))


def test_token_cross_entropy_is_torchs_with_its_gradient_in_the_logits_dtype():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (3 * torch.randn(50, 1024)).to(dtype).requires_grad_()
        targets = torch.randint(0, 1024, (50,))
        targets[:10] = logits[:10].detach().float().argmax(-1)  # ten hits
        loss, hits = token_cross_entropy(logits, targets)
        reference = logits.detach().float().requires_grad_()
        expected = F.cross_entropy(reference, targets)
        expected.backward()
        torch.testing.assert_close(loss, expected)
        (2 * loss).backward()
        assert logits.grad.dtype == dtype
        torch.testing.assert_close(logits.grad, (2 * reference.grad).to(dtype))
        assert hits.item() == (logits.float().argmax(-1) == targets).float().mean().item() == pytest.approx(0.2)
        assert not hits.requires_grad


def test_token_cross_entropy_counts_a_tie_for_the_highest_logit_as_a_hit():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [1.0, 3.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    _, hits = token_cross_entropy(logits, torch.tensor([1, 2, 1]))
    assert hits.item() == pytest.approx(2 / 3)
