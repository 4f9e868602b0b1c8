"""A phase's typed settings (kronos_exp.schemas.TrainConfig) as the loop's FitSettings, plus what
the run decides: device, precision, processes, seed and the resumable state."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..schemas import TrainConfig
from .distributed import World
from .loop import FitSettings
from .optim import partial_of


@dataclass(frozen=True)
class LoopOptions:
    """The run-wide settings every phase's loop shares (``num_workers``, ``compile``,
    ``checkpoint_every_steps`` of the run's config)."""
    num_workers: int = 0
    compile: bool = False
    checkpoint_every_steps: int = 200


def fit_settings(s: TrainConfig, *, device: torch.device, precision: str, world: World, state_path: Path | None,
                 resume: bool, loop: LoopOptions = LoopOptions()) -> FitSettings:
    """``s`` resolved (kronos_exp.config.resolve: its seed set, its optimizer and scheduler plain
    ``_partial_`` mappings) as the loop's settings."""
    return FitSettings(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, weight_decay=s.weight_decay,
                       adam_betas=(s.adam_beta1, s.adam_beta2), pct_start=s.pct_start,
                       grad_clip=s.grad_clip, accumulation_steps=s.accumulation_steps,
                       log_interval=s.log_interval, device=device, precision=precision, num_workers=loop.num_workers,
                       seed=s.seed, compile=loop.compile, world=world, state_path=state_path, resume=resume,
                       checkpoint_every_steps=loop.checkpoint_every_steps,
                       optimizer=partial_of(s.optimizer), scheduler=partial_of(s.scheduler),
                       no_decay_groups=s.no_decay_groups, patience=s.early_stopping.patience,
                       min_delta=s.early_stopping.min_delta)
