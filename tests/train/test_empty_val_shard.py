"""Defect 9: under torchrun a rank whose validation shard is empty (fewer validation windows than
processes) takes part in the same collectives as the others, and every rank reports the mean
over all ranks' windows. Two real gloo processes on the CPU."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fit_toys import torchrun_two

pytestmark = pytest.mark.ddp

_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from kronos_exp.train import FitSettings
    from kronos_exp.train.distributed import World, start
    sys.path.insert(0, {tests!r})
    from fit_toys import Regression, data, end_rank, fit_stopping_at

    world = World.from_env()
    start(world, torch.device("cpu"), "gloo")
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    s = FitSettings(epochs=1, lr=1e-2, batch_size=4, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.1,
                    grad_clip=1.0, accumulation_steps=1, log_interval=1, device=torch.device("cpu"), world=world)
    val = data(1, 4)  # one validation window for two processes: rank 1's shard is empty
    result = fit_stopping_at(model, s, data(16, 4), val)
    with torch.no_grad():
        expected = Regression().loss(model, val.tensors)["loss"].item()
    with open(f"rank{{world.rank}}.txt", "w") as out:  # a file each: lines on a shared stdout interleave
        out.write(f"{{result.val_history[-1]!r}} {{expected!r}}")
    end_rank()
""")


def test_a_rank_with_no_validation_windows_validates_with_the_others(tmp_path):
    torchrun_two(_SCRIPT.format(tests=str(Path(__file__).parent)), tmp_path, timeout=110)
    for rank in (0, 1):  # the mean over the one window, on the rank that has it and the one that has none
        val_loss, expected = map(float, (tmp_path / f"rank{rank}.txt").read_text().split())
        assert val_loss == pytest.approx(expected, rel=1e-6)
