"""A phase's config section (``tokenizer:`` / ``predictor:``) as the loop's FitSettings.

Hydra builds the section's ``_partial_`` optimizer and scheduler here, not in the loop, so the
loop itself needs torch alone (the CUDA tests run it on an image without Hydra).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from hydra.utils import instantiate

from .distributed import World
from .loop import FitSettings


def fit_settings(section: Mapping[str, Any], *, device: torch.device, precision: str, world: World, seed: int,
                 state_path: Path | None, resume: bool, num_workers: int, compile: bool,
                 checkpoint_every_steps: int) -> FitSettings:
    """``section`` resolved to plain values (``OmegaConf.to_container(..., resolve=True)``), plus
    what the run decides: device, precision, processes, seed and the resumable state."""
    s = section
    return FitSettings(epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"], weight_decay=s["weight_decay"],
                       adam_betas=(s["adam_beta1"], s["adam_beta2"]), pct_start=s["pct_start"],
                       grad_clip=s["grad_clip"], accumulation_steps=s["accumulation_steps"],
                       log_interval=s["log_interval"], device=device, precision=precision, num_workers=num_workers,
                       seed=seed, compile=compile, world=world, state_path=state_path, resume=resume,
                       checkpoint_every_steps=checkpoint_every_steps,
                       optimizer=instantiate(s["optimizer"], _convert_="all"),
                       scheduler=instantiate(s["scheduler"], _convert_="all"),
                       no_decay_groups=s["no_decay_groups"])
