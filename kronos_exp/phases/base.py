"""What makes a training phase: its model, its loss, the datasets it trains on and what it builds
on. Everything about the run around it (claim, reuse, resume, register, ranks) happens in
kronos_exp/runner.py and kronos_exp/tracking/lifecycle.py, the same for every phase."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import DictConfig
from torch import nn

from ..data import DataSplits
from ..train.distributed import World


@dataclass(frozen=True)
class Upstream:
    """A checkpoint a phase builds on (the predictor's tokenizer): its folder and the tags that
    identify it (``tokenizer_fingerprint``, and ``tokenizer_version`` when it is registered)."""
    folder: Path
    tags: dict[str, str]


@dataclass
class PhaseContext:
    """What a phase is built from, the same on every rank."""
    cfg: DictConfig
    data: DataSplits
    device: torch.device
    precision: str = "fp32"  # cfg.precision with ``auto`` resolved for this device
    world: World = field(default_factory=World)
    upstream: dict[str, Upstream] = field(default_factory=dict)  # by the name of the phase it comes from


class Phase:
    """A training phase. Subclasses set ``name`` and ``val_key`` and implement ``build_model`` and
    ``loss`` (the Objective the shared loop calls)."""

    name: ClassVar[str]
    val_key: ClassVar[str]
    builds_on: ClassVar[tuple[str, ...]] = ()  # phases whose checkpoint this one needs (in ``ctx.upstream``)

    def check(self, cfg: DictConfig) -> None:
        """Refuse settings this phase cannot run with, before any phase starts."""

    def settings(self, cfg: DictConfig) -> DictConfig:
        return cfg[self.name]

    def build_model(self, ctx: PhaseContext) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def epoch_metrics(self, model: nn.Module, loader) -> dict[str, float]:
        return {}

    def datasets(self, ctx: PhaseContext):
        """(train, val) the loop iterates; after ``build_model``, so a phase may derive them from it."""
        return ctx.data.train, ctx.data.val

    def package_checkpoint(self, ctx: PhaseContext, folder: Path) -> None:
        """Add files to the best checkpoint folder before it is logged and registered."""

    def reported_metrics(self, cfg: DictConfig) -> list[str]:
        """Names of the job-run metrics this phase will report (an ``objective`` must be one);
        the first is the phase's own objective."""
        return [f"{self.name}_val_loss"]

    def report(self, result) -> dict[str, float]:
        """The job-run metrics of a finished phase (a tracking PhaseResult)."""
        return {f"{self.name}_val_loss": result.val_loss}
