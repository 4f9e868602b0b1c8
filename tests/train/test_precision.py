"""precision=auto|fp32|bf16|fp16: what each resolves to, and what stays fp32."""
from __future__ import annotations

import pytest
import torch

from kronos_exp.train.precision import autocast, cpu_has_fast_bf16, full_precision, grad_scaler, resolve_precision

CPU = torch.device("cpu")


def test_auto_on_cpu_follows_the_cpu_flags():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_fast_bf16() else "fp32")


def test_fp16_needs_cuda_and_names_are_checked():
    with pytest.raises(ValueError, match="precision=fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="valid: auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


def test_bf16_autocast_lowers_matmuls_and_full_precision_restores_fp32():
    a = torch.randn(4, 4)
    with autocast(CPU, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
        with full_precision(CPU):
            assert (a @ a).dtype == torch.float32
    with autocast(CPU, "fp32"):
        assert (a @ a).dtype == torch.float32


def test_the_scaler_is_a_pass_through_except_for_fp16():
    assert not grad_scaler(CPU, "bf16").is_enabled()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_scales_the_loss():
    cuda = torch.device("cuda")
    assert grad_scaler(cuda, "fp16").is_enabled()
    assert resolve_precision("auto", cuda) in ("bf16", "fp32")


def test_cpu_bf16_attention_is_bf16_matmuls_around_an_fp32_softmax():
    """CPU bf16 SDPA kernels are slower than two bf16 matmuls at these sizes: under autocast the
    blocks compute q k^T and p v in bf16 and the causal softmax in fp32, within bf16 rounding of
    fp32 attention, and a padding mask still goes through torch's fp32 kernel."""
    import torch.nn.functional as F

    from kronos_exp.model.blocks import _sdpa

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 8).bfloat16() for _ in range(3))
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    with autocast(CPU, "bf16"):
        out = _sdpa(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), exact, atol=3e-2, rtol=3e-2)
    assert not torch.equal(out.float(), exact.bfloat16().float())  # not torch's kernel: the products rounded

    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    with autocast(CPU, "bf16"):
        masked = _sdpa(q, k, v, attn_mask=mask)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).bfloat16()
    assert torch.equal(masked, expected)
