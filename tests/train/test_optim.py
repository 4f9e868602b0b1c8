"""Optimizer and schedule from a phase's config: the default trains bit-identically to the
AdamW + OneCycle the loop built before they were configs; the cosine schedule and the no-decay
groups do what their configs say."""
from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from fit_toys import Regression, data
from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import resolve
from kronos_exp.model.predictor import Kronos
from kronos_exp.train import fit
from kronos_exp.train.distributed import World
from kronos_exp.train.optim import make_optimizer, param_groups
from kronos_exp.train.settings import LoopOptions, fit_settings

CPU = torch.device("cpu")


def _section(phase: str, *overrides: str):
    """The phase's typed section, as the pipeline hands it to the phase."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides=list(overrides))
    return getattr(resolve(cfg), phase)


def _settings(section):
    return fit_settings(dataclasses.replace(section, epochs=2, batch_size=8, log_interval=1, seed=3), device=CPU,
                        precision="fp32", world=World(), state_path=None, resume=False,
                        loop=LoopOptions(checkpoint_every_steps=0))


def _trained(s) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    lrs = []
    fit(model, Regression(), data(64, 4), data(16, 4), s,
        log_metrics=lambda m, step: lrs.append(m["lr"]) if "lr" in m else None, on_best=lambda *a: None)
    return model, lrs


def test_the_default_config_trains_bit_identically_to_the_old_hard_coded_adamw_and_onecycle():
    s = _settings(_section("tokenizer", "tokenizer.weight_decay=0.3"))
    from_config, _ = _trained(s)
    # What train/loop.py built before optimizer and scheduler were configs, line for line.
    s.optimizer = lambda params: torch.optim.AdamW(params, lr=s.lr, betas=s.adam_betas, weight_decay=s.weight_decay)
    s.scheduler = lambda optimizer, total_steps: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=s.lr, total_steps=total_steps, pct_start=s.pct_start, div_factor=10, final_div_factor=100)
    hard_coded, _ = _trained(s)
    s.optimizer = s.scheduler = None  # FitSettings built in code (tests, benchmarks) take the same defaults
    default, _ = _trained(s)
    for a, b, c in zip(from_config.parameters(), hard_coded.parameters(), default.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_one_override_gives_one_phase_the_cosine_schedule_with_linear_warmup():
    overrides = ("scheduler@predictor.scheduler=cosine", "predictor.pct_start=0.25")
    assert _section("tokenizer", *overrides).scheduler["_target_"].endswith("OneCycleLR")
    s = _settings(_section("predictor", *overrides))
    _, lrs = _trained(s)  # 2 epochs of 8 steps, one lr logged per step
    peak, floor = s.lr, s.lr * 0.1
    assert lrs[:4] == pytest.approx([peak / 4, peak / 2, 3 * peak / 4, peak])  # linear over 25% of 16 steps
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] == pytest.approx(floor)
    assert lrs[9] == pytest.approx(floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * 5 / 11)))  # 5 of the 11 decay steps


def _groups(model: nn.Module, no_decay: bool) -> list[dict]:
    s = _settings(_section("predictor", f"predictor.no_decay_groups={str(no_decay).lower()}"))
    return make_optimizer(param_groups(model, s.no_decay_groups), s).param_groups


def test_no_decay_groups_exempt_biases_norms_and_embeddings_and_are_off_by_default():
    model = Kronos(s1_bits=4, s2_bits=4, n_layers=2, d_model=16, n_heads=2, ff_dim=32, ffn_dropout_p=0.0,
                   attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)
    names = {id(p): n for n, p in model.named_parameters()}
    [every] = _groups(model, no_decay=False)  # as the reference trains: every parameter decays
    assert every["weight_decay"] == 0.1 and len(every["params"]) == len(list(model.parameters()))
    decay, exempt = _groups(model, no_decay=True)
    assert decay["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    exempt_names = {names[id(p)] for p in exempt["params"]}
    assert {n for n in exempt_names if n.endswith(".bias")} == {n for n in names.values() if n.endswith(".bias")}
    assert any("norm" in n for n in exempt_names) and any(n.startswith("embedding.emb_s1") for n in exempt_names)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    assert all(p.ndim == 2 and id(p) not in tables for p in decay["params"])
    assert len(decay["params"]) + len(exempt["params"]) == len(list(model.parameters()))


def test_adamw_takes_torchs_fused_kernel_on_a_cpu_too():
    """The fused kernel was asked for on CUDA only; on a CPU AdamW stepped each parameter with a
    dozen ops (6.4 against 1.7 ms a step for the tokenizer's 88 tensors)."""
    model = nn.Linear(4, 2)
    optimizer = make_optimizer(param_groups(model, False), _settings(_section("tokenizer")))
    assert optimizer.defaults["fused"] is True
    s = _settings(_section("tokenizer"))
    s.optimizer = functools.partial(torch.optim.SGD, lr=1e-3)  # takes fused, but only Adam/AdamW are asked on a CPU
    sgd = make_optimizer(param_groups(model, False), s)
    assert isinstance(sgd, torch.optim.SGD) and not sgd.defaults["fused"]
    s.optimizer = lambda params, lr=1e-3: torch.optim.Adam(params, lr=lr)  # no fused argument: none asked
    assert not make_optimizer(param_groups(model, False), s).defaults["fused"]
