"""The ``last`` training state: everything the loop needs to carry on where it stopped.

Written atomically (temp file, fsync, rename) so a kill at any moment leaves either the previous
state or the new one, never half a file. Read back, it restores the model, optimizer, scheduler,
every random generator in play, the position in the data and the best-so-far, so a resumed run
ends with the weights an uninterrupted one would have.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_VERSION = 1


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation, dropout, sampling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states(loader_generator: torch.Generator) -> dict[str, Any]:
    """Python, NumPy, torch (CPU and every CUDA device) and the DataLoader's own generator."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state(),
    }


def restore_rng_states(states: dict[str, Any], loader_generator: torch.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    loader_generator.set_state(states["loader"])


@dataclass
class TrainingState:
    """Where training stands at an optimizer-step boundary.

    ``epoch`` is the epoch in progress and ``batches_done`` the batches of it already trained on
    (0 at an epoch's start); ``rng`` is taken at that same boundary, except ``rng["loader"]``, which
    is the DataLoader generator as it was when the epoch's iterator was created.
    """
    epoch: int
    batches_done: int
    step: int
    world_size: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]  # fp16 loss scale (empty otherwise)
    rng: dict[str, Any]
    best_val_loss: float
    best_epoch: int
    val_history: list[float] = field(default_factory=list)
    train_history: list[tuple[int, float]] = field(default_factory=list)
    samples: int = 0
    train_seconds: float = 0.0
    window: dict[str, Any] = field(default_factory=dict)  # train-loss sums since the last log line

    def save(self, path: Path) -> None:
        """Atomic: write ``<path>.tmp``, fsync it, rename over ``path``, fsync the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            torch.save({"version": STATE_VERSION, **self.__dict__}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    @classmethod
    def load(cls, path: Path) -> "TrainingState":
        raw = torch.load(path, map_location="cpu", weights_only=False)
        version = raw.pop("version", None)
        if version != STATE_VERSION:
            raise ValueError(f"{path} holds training state version {version}; this kronos_exp reads version "
                             f"{STATE_VERSION}. Start the phase afresh with resume=false")
        return cls(**raw)
