"""The predictor trains on the tokens forecasting sees: the frozen tokenizer encodes in fp32
even when the step runs under bf16 autocast."""
from __future__ import annotations

from pathlib import Path

import torch

from kronos_exp.schemas import PredictorConfig
from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.phases.predictor import PredictorPhase
from kronos_exp.train.precision import autocast

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"


def test_bf16_training_tokens_equal_fp32_encode_tokens():
    tokenizer = KronosTokenizer.from_pretrained(FIXTURES / "tokenizer").eval()
    model = Kronos.from_pretrained(FIXTURES / "predictor")
    torch.manual_seed(0)
    x = torch.randn(32, 81, 6).clamp(-5, 5)
    stamp = torch.zeros(32, 81, 5, dtype=torch.long)
    with torch.no_grad():
        s1_fp32, s2_fp32 = tokenizer.encode(x, half=True)  # what forecasting does
        with autocast(torch.device("cpu"), "bf16"):
            s1_bf16, s2_bf16 = tokenizer.encode(x, half=True)
    # The check can fail: encoding under autocast gives other tokens on this input.
    assert not (torch.equal(s1_bf16, s1_fp32) and torch.equal(s2_bf16, s2_fp32))

    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].clone(), args[1].clone())))
    phase = PredictorPhase(PredictorConfig())
    phase.tokenizer, phase.teacher_forcing = tokenizer, True
    with autocast(torch.device("cpu"), "bf16"):
        phase.loss(model, (x, stamp))
    (s1_in, s2_in), = seen
    assert torch.equal(s1_in, s1_fp32[:, :-1]) and torch.equal(s2_in, s2_fp32[:, :-1])
