"""The optimizer and the learning-rate schedule the loop steps, built from ``_partial_`` configs.

A phase's ``optimizer`` and ``scheduler`` config nodes (conf/optimizer/, conf/scheduler/) become
partials here (``partial_of``), and the loop completes them with what only it knows: the parameters
(grouped for weight decay), the fused kernel where torch has one, the number of optimizer steps.
Without them (FitSettings built in code) the loop uses AdamW + OneCycle from the settings' own
``lr``, ``adam_betas``, ``weight_decay`` and ``pct_start``: the reference recipe.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..schemas import OneCycleConfig


def partial_of(node: Mapping[str, Any] | None) -> functools.partial | None:
    """A ``_partial_`` config node (``_target_`` + keyword arguments) as the callable it names,
    waiting for what only the loop knows (the parameters, the number of steps)."""
    if not node:
        return None
    target = str(node.get("_target_", ""))
    module, _, name = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"_target_={target!r} names nothing importable; valid: a dotted path to a callable, "
                          "e.g. torch.optim.AdamW") from None
    return functools.partial(factory, **{k: v for k, v in node.items() if not k.startswith("_")})


def param_groups(model: nn.Module, no_decay_groups: bool) -> list:
    """The trainable parameters; with ``no_decay_groups`` as two AdamW groups: weight matrices
    decay, while biases and norm scales (every parameter of fewer than 2 dimensions) and
    embedding tables take no weight decay. Without it every parameter decays, as the reference trains."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_groups:
        return params
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    exempt = [p for p in params if p.ndim < 2 or id(p) in embeddings]
    decay = [p for p in params if not (p.ndim < 2 or id(p) in embeddings)]
    return [g for g in ({"params": decay}, {"params": exempt, "weight_decay": 0.0}) if g["params"]]


def wants_fused(factory, device: torch.device) -> bool:
    """Whether to ask ``factory`` for torch's fused kernel (one kernel over every parameter instead
    of a dozen ops each: 4x faster at Kronos sizes on a CPU): on CUDA wherever it takes ``fused``;
    on a CPU for Adam and AdamW, whose fused CPU kernels torch has from 2.4."""
    if "fused" not in inspect.signature(factory).parameters:
        return False
    if device.type == "cuda":
        return True
    cpu_fused = tuple(int(n) for n in torch.__version__.split(".")[:2]) >= (2, 4)
    return device.type == "cpu" and cpu_fused and getattr(factory, "func", factory) in (torch.optim.Adam,
                                                                                        torch.optim.AdamW)


def make_optimizer(groups: list, s) -> torch.optim.Optimizer:
    """``s.optimizer`` (a partial taking the parameters), else AdamW from ``s``; the fused kernel
    where the device and the optimizer have one. The state stays fp32 whatever the precision."""
    factory = s.optimizer or functools.partial(torch.optim.AdamW, lr=s.lr, betas=s.adam_betas,
                                               weight_decay=s.weight_decay)
    return factory(groups, **({"fused": True} if wants_fused(factory, s.device) else {}))


def make_scheduler(optimizer: torch.optim.Optimizer, s, batches_per_epoch: int):
    """``s.scheduler`` (a partial taking the optimizer and ``total_steps``), else OneCycle from
    ``s``; and the number of optimizer steps the run takes."""
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / s.accumulation_steps))
    total_steps = s.epochs * steps_per_epoch
    factory = s.scheduler or functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=s.lr,
                                               pct_start=s.pct_start, div_factor=OneCycleConfig.div_factor,
                                               final_div_factor=OneCycleConfig.final_div_factor)
    return factory(optimizer, total_steps=total_steps), total_steps


class WarmupCosine:
    """The learning-rate factor at a step: a linear rise over the first ``warmup`` fraction of the
    steps to 1, then a cosine from 1 down to ``min_lr_ratio`` at the last step."""

    def __init__(self, total_steps: int, warmup: float, min_lr_ratio: float):
        self.total, self.warm, self.floor = total_steps, max(1, round(warmup * total_steps)), min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return (step + 1) / self.warm
        progress = (step - self.warm) / max(1, self.total - 1 - self.warm)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float,
                  min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay with a linear warm-up (conf/scheduler/cosine.yaml); the peak is each group's
    ``lr``. Unlike OneCycle it leaves AdamW's betas alone."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup, min_lr_ratio))
