"""Where ranks meet: the run's decisions shared, one phase on every rank, and the run ended on
every rank as one (``ranks_end_together``); train/distributed.py has the collectives they use.

Rank 0 finds what the phase builds on, opens its run and decides (reuse, resume or train:
tracking/lifecycle.py); it hands the decision to the other ranks, all ranks train, and rank 0
registers and hands them the result. That is two broadcasts per phase on every rank (plus the
loop's own collectives), whatever a phase caches. A measuring step (evaluation) runs on rank 0
alone; the others receive its result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

from .data import DataSplits
from .errors import TrialPruned, UserError, error_line
from .forecasting import pyfunc
from .forecasting.requests import Limits
from .model.checkpoint import resolve_checkpoint_dir
from .phases import Phase, PhaseContext, Upstream
from .schemas import TrainConfig
from .tracking import RegisteredCheckpoint, Tracker, fingerprint
from .tracking.fingerprint import checkpoint_digest, phase_fingerprint_inputs
from .tracking.lifecycle import PhaseResult, PhaseRun, PhaseRunFactory, Plan
from .tracking.stale import runs_ended
from .train import FitResult, FitSettings, fit
from .train import distributed
from .train.distributed import World
from .train.interrupt import exit_code
from .train.settings import LoopOptions, fit_settings as train_settings
from .train.state import seed_everything
from .window import WindowSpec

log = logging.getLogger(__name__)


class TokenizerUnavailable(UserError, RuntimeError):
    """The predictor phase (or evaluation) found no tokenizer to build on."""


class MeasuringStep(Protocol):
    """A step that trains nothing (evaluation): it measures on rank 0 inside its own phase run."""
    name: str

    def measure(self, ctx: "RunContext") -> PhaseResult: ...


@dataclass
class RunContext:
    """What the pipeline hands the steps besides their own settings: the data and the window it
    was cut with, the runtime (device, precision, ranks, folder) and, for what a step builds on,
    the training phases' sections (a phase's fingerprint comes from its section, whether or not it
    runs). The tracking side (``runs``) on rank 0 only."""
    data: DataSplits
    data_fingerprint: dict[str, Any]
    window: WindowSpec
    sections: dict[str, TrainConfig]  # tokenizer/predictor settings, resolved (kronos_exp.config.resolve)
    model_names: dict[str, str]  # registered model name by phase (mlflow.<phase>_model_name)
    device: torch.device
    output_dir: Path
    runs: PhaseRunFactory | None = None  # rank 0
    precision: str = "fp32"  # the run's precision with ``auto`` resolved for this device
    world: World = field(default_factory=World)
    loop: LoopOptions = field(default_factory=LoopOptions)
    limits: Limits = field(default_factory=Limits)  # what a request to a packaged predictor may ask
    results: dict[str, PhaseResult] = field(default_factory=dict)
    # Every rank: hears (phase, epoch, val_loss) after each epoch; may stop the phase (a search's pruner).
    on_epoch_end: Callable[[str, int, float, bool], None] | None = None

    @property
    def tracker(self) -> Tracker:
        return self.runs.tracker

    def phase_context(self, upstream: dict[str, Upstream]) -> PhaseContext:
        return PhaseContext(self.data, self.window, self.device, self.precision, self.world, upstream)

    def fingerprint_inputs(self, phase: str, upstream: dict[str, str] | None = None, section: Any = None,
                           runner: type | None = None) -> dict[str, Any]:
        """What determines ``phase``'s result: its section (a training phase's own unless given) and
        the ``runner`` class that trains it (None: kronos_exp's own)."""
        return phase_fingerprint_inputs(phase, section or self.sections[phase], data=self.data_fingerprint,
                                        precision=self.precision, world_size=self.world.world_size, upstream=upstream,
                                        runner=runner)


@contextlib.contextmanager
def ranks_end_together(world: World) -> Iterator[None]:
    """The run on this rank, ended as the torchrun it belongs to ends: rank 0 says why once (its
    error, its interrupt, or the peer whose failure stopped it), the others end quietly after it."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if world.is_main:
            _raise_if_a_peer_failed(world)  # torchrun's SIGTERM after a process died is no interrupt
            raise
        distributed.report_stop(world)
        raise SystemExit(exit_code(stop)) from None  # stopped with rank 0, which says so once
    except TrialPruned:  # every rank heard it at the same epoch
        raise
    except UserError:
        if world.is_main:
            raise
        # Every rank meets a bad setting alike: rank 0 alone says so and ends the runs FAILED.
        distributed.wait_for_rank_zero(world)
        raise SystemExit(1) from None
    except Exception:
        _raise_if_a_peer_failed(world)  # a broken collective because a peer died: the peer is the news
        if world.distributed:
            distributed.report_failure(world)
        raise
    finally:
        distributed.stop(world)


def _raise_if_a_peer_failed(world: World) -> None:
    """Stop with the line that names the process whose failure stopped this one (rank 0 says it)."""
    failure = distributed.peer_failure(world) if world.distributed else None
    if failure is not None:
        raise SystemExit(error_line(f"{failure}; {runs_ended('FAILED')}") if world.is_main else 1) from None


def share_decisions(ctx: RunContext, skip_existing: bool) -> bool:
    """Every rank writes where rank 0's Hydra folder is, and takes rank 0's reuse decisions."""
    ctx.output_dir, skip_existing = ctx.world.share((ctx.output_dir, skip_existing))
    return skip_existing


def run_step(step: Phase | MeasuringStep, ctx: RunContext) -> PhaseResult:
    """Run a training phase on every rank, or a measuring step on rank 0; every rank returns the result."""
    if isinstance(step, Phase):
        return train_or_reuse(step, ctx)
    return ctx.world.share(step.measure(ctx) if ctx.world.is_main else None)


def train_or_reuse(phase: Phase, ctx: RunContext) -> PhaseResult:
    """Train or reuse ``phase``; rank 0 decides and tracks, the other ranks train on its word."""
    world = ctx.world
    if not world.is_main:
        decision = world.share(None)
        if decision is not None:
            upstream, plan = decision
            _train(phase, ctx, ctx.phase_context(upstream), plan)
        return world.share(None)
    upstream = {name: find_upstream(name, ctx) for name in phase.builds_on}
    identity = {f"{name}_fingerprint": u.tags[f"{name}_fingerprint"] for name, u in upstream.items()}
    inputs = ctx.fingerprint_inputs(phase.name, identity, runner=type(phase))
    settings = dataclasses.asdict(phase.settings)
    done = ctx.runs.done_earlier_in_job(phase.name, inputs, ctx.model_names[phase.name])
    if done is not None:
        world.share(None)
        return world.share(done)
    with ctx.runs.open(phase.name, inputs, settings, tags=identity) as run:
        decided = run.decide(ctx.model_names[phase.name])
        if isinstance(decided, PhaseResult):
            world.share(None)
            return world.share(decided)
        world.share((upstream, decided))
        trained = _train(phase, ctx, ctx.phase_context(upstream), decided, run)
        version_tags = {k: v for u in upstream.values() for k, v in u.tags.items()}
        result = run.finish(decided, trained, ctx.model_names[phase.name],
                            package=lambda folder: package(phase, ctx, upstream, folder), version_tags=version_tags)
    return world.share(result)


def package(phase: Phase, ctx: RunContext, upstream: dict[str, Upstream], folder: Path) -> None:
    """What a checkpoint carries besides its weights: the window it was trained on (every reader
    normalises as training did), and for a servable phase the MLflow model with its tokenizer."""
    ctx.window.save(folder)
    if phase.servable:
        pyfunc.package(folder, resolve_checkpoint_dir(upstream["tokenizer"].folder), ctx.window, ctx.limits)


def _train(phase: Phase, ctx: RunContext, pctx: PhaseContext, plan: Plan, run: PhaseRun | None = None) -> FitResult:
    """Build the model from the phase's seed (the same on every rank) and train it; rank 0 (``run``)
    logs and keeps the best checkpoint."""
    seed_everything(phase.settings.seed)
    model = phase.build_model(pctx)
    n_params = sum(p.numel() for p in model.parameters())
    if run is not None:
        run.log_param("n_parameters", n_params)
    log.info("%s: training %s parameters on %d windows for %d epochs", phase.name, f"{n_params:,}",
             len(ctx.data.train), phase.settings.epochs)
    building = time.perf_counter()
    train_set, val_set = phase.datasets(pctx)
    if run is not None:  # the predictor's token cache: encoding the reference does inside its epochs
        run.log_metrics({"datasets_s": time.perf_counter() - building}, 0)
    hook = ctx.on_epoch_end
    return fit(model, phase, train_set, val_set, fit_settings(phase, ctx, plan),
               log_metrics=run.log_metrics if run else _ignore, on_best=run.save_best(plan) if run else _ignore,
               desc=phase.name, on_state_saved=run.record_state if run else None,
               on_epoch_end=(lambda epoch, loss, last: hook(phase.name, epoch, loss, last)) if hook else None)


def _ignore(*args) -> None:
    """What ranks other than 0 do with metrics and best checkpoints."""


def fit_settings(phase: Phase, ctx: RunContext, plan: Plan) -> FitSettings:
    """The phase's settings with the plan's state: saved into this run's folder, resumed from
    ``plan.resume_from`` (an earlier run's state, checked by rank 0) when given."""
    settings = train_settings(phase.settings, device=ctx.device, precision=ctx.precision, world=ctx.world,
                              state_path=plan.state_path, resume=plan.resume, loop=ctx.loop)
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
    pretrained = ctx.sections["tokenizer"].pretrained
    trained = ctx.results.get("tokenizer")
    if trained is not None:
        return Upstream(trained.checkpoint_dir, _identity(trained.fingerprint, trained.version), pretrained)
    inputs = ctx.fingerprint_inputs("tokenizer")
    fp = fingerprint(inputs)
    name = ctx.model_names["tokenizer"]
    hit = ctx.runs.registry.fetch(name, fp, ctx.output_dir / "reused")
    if hit is not None:
        version, folder = hit
        log.info("predictor: using registered tokenizer %s", version.label)
        return Upstream(folder, _identity(fp, version), pretrained)
    if pretrained:
        log.info("predictor: no tokenizer trained for this data yet; using tokenizer.pretrained=%s", pretrained)
        return Upstream(Path(str(pretrained)), {"tokenizer_fingerprint": checkpoint_digest(pretrained)}, pretrained)
    near = ctx.runs.registry.near_misses(name, inputs)
    registered = "; registered for this data: " + " | ".join(near) + ";" if near else "; none is registered for this data;"
    raise TokenizerUnavailable(
        "the predictor phase needs a tokenizer, and none was found: this run trained none, the "
        f"registry ('{name}' at {ctx.tracker.tracking_uri}) holds none for this data and tokenizer config "
        f"(fingerprint {fp[:12]}){registered} and tokenizer.pretrained is null. Set the differing settings to the "
        "registered values (a seed for the predictor alone is predictor.seed), run phases=tokenizer first, run "
        "phases=both, or set tokenizer.pretrained=<folder or hub id>.")
