"""What makes a training phase: its model, its loss, the datasets it trains on and what it builds
on. Everything about the run around it (claim, reuse, resume, register, ranks) happens in
kronos_exp/runner.py and kronos_exp/tracking/lifecycle.py, the same for every phase."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..data import DataSplits
from ..schemas import TrainConfig
from ..train.distributed import World
from ..window import WindowSpec


@dataclass(frozen=True)
class Upstream:
    """A checkpoint a phase builds on (the predictor's tokenizer): its folder and the tags that
    identify it (``tokenizer_fingerprint``, and ``tokenizer_version`` when it is registered)."""
    folder: Path
    tags: dict[str, str]
    pretrained: str | None = None  # the run's ``<phase>.pretrained`` (the advice of a mismatch names it)


@dataclass
class PhaseContext:
    """What a phase is built from at run time, the same on every rank (its settings it was built with)."""
    data: DataSplits
    window: WindowSpec
    device: torch.device
    precision: str = "fp32"  # the run's precision with ``auto`` resolved for this device
    world: World = field(default_factory=World)
    upstream: dict[str, Upstream] = field(default_factory=dict)  # by the name of the phase it comes from


class Phase:
    """A training phase, built with its own section of the config (``settings``). Subclasses set
    ``name`` and ``val_key`` and implement ``build_model`` and ``loss`` (the Objective the shared
    loop calls)."""

    name: ClassVar[str]
    val_key: ClassVar[str]
    builds_on: ClassVar[tuple[str, ...]] = ()  # phases whose checkpoint this one needs (in ``ctx.upstream``)
    servable: ClassVar[bool] = False  # its registered versions are packaged as a servable MLflow model

    def __init__(self, settings: TrainConfig) -> None:
        self.settings = settings

    def build_model(self, ctx: PhaseContext) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def epoch_metrics(self, model: nn.Module, loader) -> dict[str, float]:
        return {}

    def datasets(self, ctx: PhaseContext):
        """(train, val) the loop iterates; after ``build_model``, so a phase may derive them from it."""
        return ctx.data.train, ctx.data.val

    def reported_metrics(self) -> list[str]:
        """Names of the job-run metrics this phase will report (an ``objective`` must be one);
        the first is the phase's own objective."""
        return [f"{self.name}_val_loss"]

    def report(self, result) -> dict[str, float]:
        """The job-run metrics of a finished phase (a tracking PhaseResult)."""
        return {f"{self.name}_val_loss": result.val_loss}
