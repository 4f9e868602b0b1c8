"""One phase on every rank, the one place where ranks meet around a phase.

Rank 0 finds what the phase builds on, opens its run and decides (reuse, resume or train:
tracking/lifecycle.py); it hands the decision to the other ranks, all ranks train, and rank 0
registers and hands them the result. That is two broadcasts per phase on every rank (plus the
loop's own collectives), whatever a phase caches. A measuring step (evaluation) runs on rank 0
alone; the others receive its result.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from .config import phase_seed
from .data import DataSplits
from .errors import UserError
from .phases import Phase, PhaseContext, Upstream
from .tracking import RegisteredCheckpoint, Tracker, fingerprint
from .tracking.fingerprint import checkpoint_digest, phase_fingerprint_inputs
from .tracking.lifecycle import PhaseResult, PhaseRun, PhaseRuns, Plan
from .train import FitResult, FitSettings, fit
from .train.distributed import World
from .train.settings import fit_settings as train_settings
from .train.state import seed_everything

log = logging.getLogger(__name__)


class TokenizerUnavailable(UserError, RuntimeError):
    """The predictor phase (or evaluation) found no tokenizer to build on."""


class MeasuringStep(Protocol):
    """A step that trains nothing (evaluation): it measures on rank 0 inside its own phase run."""
    name: str

    def measure(self, ctx: "RunContext") -> PhaseResult: ...


@dataclass
class RunContext:
    """What the pipeline hands each phase: the run's settings and data on every rank; the
    tracking side (``runs``) on rank 0 only."""
    cfg: DictConfig
    data: DataSplits
    data_fingerprint: dict[str, Any]
    device: torch.device
    output_dir: Path
    runs: PhaseRuns | None = None  # rank 0
    precision: str = "fp32"  # cfg.precision with ``auto`` resolved for this device
    world: World = field(default_factory=World)
    results: dict[str, PhaseResult] = field(default_factory=dict)
    # Every rank: hears (phase, epoch, val_loss) after each epoch; may stop the phase (a search's pruner).
    on_epoch_end: Callable[[str, int, float], None] | None = None

    @property
    def tracker(self) -> Tracker:
        return self.runs.tracker

    def model_name(self, phase: str) -> str:
        return self.cfg.mlflow[f"{phase}_model_name"]

    def fingerprint_inputs(self, phase: str, upstream: dict[str, str] | None = None) -> dict[str, Any]:
        return phase_fingerprint_inputs(self.cfg, phase, data=self.data_fingerprint, precision=self.precision,
                                        world_size=self.world.world_size, upstream=upstream)


def run_step(step: Phase | MeasuringStep, ctx: RunContext) -> PhaseResult:
    """Run a training phase on every rank, or a measuring step on rank 0; every rank returns the result."""
    if isinstance(step, Phase):
        return run_phase(step, ctx)
    return ctx.world.share(step.measure(ctx) if ctx.world.is_main else None)


def run_phase(phase: Phase, ctx: RunContext) -> PhaseResult:
    """Train or reuse ``phase``; rank 0 decides and tracks, the other ranks train on its word."""
    world = ctx.world
    if not world.is_main:
        decision = world.share(None)
        if decision is not None:
            upstream, plan = decision
            _train(phase, ctx, PhaseContext(ctx.cfg, ctx.data, ctx.device, ctx.precision, world, upstream), plan)
        return world.share(None)
    upstream = {name: find_upstream(name, ctx) for name in phase.builds_on}
    identity = {f"{name}_fingerprint": u.tags[f"{name}_fingerprint"] for name, u in upstream.items()}
    inputs = ctx.fingerprint_inputs(phase.name, identity)
    settings = OmegaConf.to_container(phase.settings(ctx.cfg), resolve=True)
    with ctx.runs.open(phase.name, inputs, settings, tags=identity) as run:
        decided = run.decide(ctx.model_name(phase.name))
        if isinstance(decided, PhaseResult):
            world.share(None)
            return world.share(decided)
        world.share((upstream, decided))
        pctx = PhaseContext(ctx.cfg, ctx.data, ctx.device, ctx.precision, world, upstream)
        trained = _train(phase, ctx, pctx, decided, run)
        version_tags = {k: v for u in upstream.values() for k, v in u.tags.items()}
        result = run.finish(decided, trained, ctx.model_name(phase.name),
                            package=lambda folder: phase.package_checkpoint(pctx, folder), version_tags=version_tags)
    return world.share(result)


def _train(phase: Phase, ctx: RunContext, pctx: PhaseContext, plan: Plan, run: PhaseRun | None = None) -> FitResult:
    """Build the model from the phase's seed (the same on every rank) and train it; rank 0 (``run``)
    logs and keeps the best checkpoint."""
    seed = phase_seed(ctx.cfg, phase.name)
    seed_everything(seed)
    model = phase.build_model(pctx)
    n_params = sum(p.numel() for p in model.parameters())
    if run is not None:
        run.log_param("n_parameters", n_params)
    log.info("%s: training %s parameters on %d windows for %d epochs", phase.name, f"{n_params:,}",
             len(ctx.data.train), phase.settings(ctx.cfg).epochs)
    building = time.perf_counter()
    train_set, val_set = phase.datasets(pctx)
    if run is not None:  # the predictor's token cache: encoding the reference does inside its epochs
        run.log_metrics({"datasets_s": time.perf_counter() - building}, 0)
    hook = ctx.on_epoch_end
    return fit(model, phase, train_set, val_set, fit_settings(phase, ctx, plan, seed),
               log_metrics=run.log_metrics if run else _ignore, on_best=run.save_best(plan) if run else _ignore,
               desc=phase.name, on_state_saved=run.record_state if run else None,
               on_epoch_end=(lambda epoch, loss: hook(phase.name, epoch, loss)) if hook else None)


def _ignore(*args) -> None:
    """What ranks other than 0 do with metrics and best checkpoints."""


def fit_settings(phase: Phase, ctx: RunContext, plan: Plan, seed: int) -> FitSettings:
    """The phase's settings with the plan's state: saved into this run's folder, resumed from
    ``plan.resume_from`` (an earlier run's state, checked by rank 0) when given."""
    settings = train_settings(OmegaConf.to_container(phase.settings(ctx.cfg), resolve=True), device=ctx.device,
                              precision=ctx.precision, world=ctx.world, seed=seed, state_path=plan.state_path,
                              resume=plan.resume, num_workers=ctx.cfg.num_workers, compile=ctx.cfg.compile,
                              checkpoint_every_steps=ctx.cfg.checkpoint_every_steps)
    return dataclasses.replace(settings, resume_from=plan.resume_from)


# -- what a phase builds on (rank 0) --------------------------------------------------------------
def find_upstream(name: str, ctx: RunContext) -> Upstream:
    if name != "tokenizer":
        raise ValueError(f"no lookup for an upstream phase named {name!r}")
    return find_tokenizer(ctx)


def _identity(fp: str, version: RegisteredCheckpoint | None) -> dict[str, str]:
    tags = {"tokenizer_fingerprint": fp}
    if version is not None:
        tags["tokenizer_version"] = f"{version.name}/{version.version}"
    return tags


def find_tokenizer(ctx: RunContext) -> Upstream:
    """This run's tokenizer, else the registered one for this data + tokenizer config, else
    ``tokenizer.pretrained``: what the predictor phase trains on and evaluation looks for."""
    trained = ctx.results.get("tokenizer")
    if trained is not None:
        return Upstream(trained.checkpoint_dir, _identity(trained.fingerprint, trained.version))
    inputs = ctx.fingerprint_inputs("tokenizer")
    fp = fingerprint(inputs)
    name = ctx.model_name("tokenizer")
    hit = ctx.runs.registry.fetch(name, fp, ctx.output_dir / "reused")
    if hit is not None:
        version, folder = hit
        log.info("predictor: using registered tokenizer %s", version.label)
        return Upstream(folder, _identity(fp, version))
    pretrained = ctx.cfg.tokenizer.pretrained
    if pretrained:
        log.info("predictor: no tokenizer trained for this data yet; using tokenizer.pretrained=%s", pretrained)
        return Upstream(Path(str(pretrained)), {"tokenizer_fingerprint": checkpoint_digest(pretrained)})
    near = ctx.runs.registry.near_misses(name, inputs)
    registered = "; registered for this data: " + " | ".join(near) + ";" if near else "; none is registered for this data;"
    raise TokenizerUnavailable(
        "the predictor phase needs a tokenizer, and none was found: this run trained none, the "
        f"registry ('{name}' at {ctx.tracker.tracking_uri}) holds none for this data and tokenizer config "
        f"(fingerprint {fp[:12]}){registered} and tokenizer.pretrained is null. Set the differing settings to the "
        "registered values (a seed for the predictor alone is predictor.seed), run phases=tokenizer first, run "
        "phases=both, or set tokenizer.pretrained=<folder or hub id>.")
