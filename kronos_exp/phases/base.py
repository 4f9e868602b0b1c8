"""What every phase runner shares: fingerprint, reuse through the registry, the shared training
loop, checkpoint logging and registration. A phase adds its model, its loss and its inputs."""
from __future__ import annotations

import functools
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..data import DataSplits
from ..errors import TrainingFailed
from ..model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, resolve_checkpoint_dir
from ..tracking import Registry, RegisteredCheckpoint, Tracker, file_digest, fingerprint, flatten, folder_digests
from ..tracking.claims import Claim, Claims, claim
from ..tracking.fingerprint import data_files_digest, fingerprint_inputs
from ..tracking.registry import FINGERPRINT_ARTIFACT
from ..tracking.plots import log_loss_curve
from ..tracking.resume import RESUMED_FROM_TAG, STATE_TAG, Unfinished
from ..train import FitResult, FitSettings, fit
from ..train.distributed import World

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"


@dataclass
class PhaseResult:
    name: str
    checkpoint_dir: Path
    fingerprint: str
    val_loss: float
    version: RegisteredCheckpoint | None
    skipped: bool
    val_history: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # what the phase reports to the job run


@dataclass
class RunContext:
    """What the pipeline hands each phase."""
    cfg: DictConfig
    data: DataSplits
    data_fingerprint: dict[str, Any]
    device: torch.device
    tracker: Tracker
    registry: Registry
    output_dir: Path
    skip_existing: bool = False
    precision: str = "fp32"  # cfg.precision with ``auto`` resolved for this device
    resume: bool | None = None  # None: resume when the store holds an unfinished run of the phase
    world: World = field(default_factory=World)
    results: dict[str, PhaseResult] = field(default_factory=dict)


@dataclass
class TrainPlan:
    """What rank 0 decided for a phase to train: where its checkpoints go, what it resumes.
    The ``last`` training state sits beside the best checkpoint: checkpoints/<phase>.last.pt."""
    best_dir: Path
    resume_from: Unfinished | None = None

    @property
    def state_path(self) -> Path:
        return self.best_dir.with_name(f"{self.best_dir.name}.last.pt")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_digest(path_or_hub_id: str) -> str:
    """Identity of a pretrained checkpoint: the hash of its contents (config values and weights
    bytes), not of its name or folder."""
    folder = resolve_checkpoint_dir(path_or_hub_id)
    config = json.loads((folder / CONFIG_NAME).read_text())
    weights = (folder / WEIGHTS_NAME).resolve()
    stat = weights.stat()
    return f"{fingerprint(config)[:16]}:{_weights_digest(weights, stat.st_size, stat.st_mtime_ns)}"


@functools.lru_cache(maxsize=16)
def _weights_digest(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a pretrained weights file, once per process while its size and mtime stay: a
    run asks for it several times (fingerprints, the tokenizer's lookup, evaluation), and a
    Kronos-base file takes a second or more to hash."""
    return file_digest(path)


def phase_seed(cfg: DictConfig, name: str) -> int:
    """Phase ``name``'s seed: its own ``<name>.seed``, else the run's ``seed``."""
    own = cfg[name].get("seed")
    return int(cfg.seed if own is None else own)


def phase_fingerprint_inputs(ctx: RunContext, name: str, upstream: dict[str, str] | None = None) -> dict[str, Any]:
    """What determines phase ``name``'s checkpoint: data, its settings, initial weights, its seed,
    precision, the training code and (for later phases) the fingerprint of what they build on."""
    settings = OmegaConf.to_container(ctx.cfg[name], resolve=True)
    if "batch_size" in settings:  # per process: N processes of B train the batches one process of N*B does
        settings["batch_size"] *= ctx.world.world_size
    pretrained = settings.get("pretrained")
    return fingerprint_inputs(name, settings, data=ctx.data_fingerprint, seed=phase_seed(ctx.cfg, name),
                              precision=ctx.precision,
                              initial_weights=checkpoint_digest(pretrained) if pretrained else None,
                              upstream=upstream)


def phase_fingerprint(ctx: RunContext, name: str, upstream: dict[str, str] | None = None) -> str:
    return fingerprint(phase_fingerprint_inputs(ctx, name, upstream))


class Phase:
    """A training phase. Subclasses set ``name`` and ``val_key`` and implement ``build_model`` and
    ``loss`` (the Objective the shared loop calls)."""

    name: ClassVar[str]
    val_key: ClassVar[str]
    trains: ClassVar[bool] = True  # False: a phase that only measures (evaluation), run on rank 0 alone

    # -- what a subclass provides -------------------------------------------------------------
    def build_model(self, ctx: RunContext) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def epoch_metrics(self, model: nn.Module, loader) -> dict[str, float]:
        return {}

    def datasets(self, ctx: RunContext):
        """(train, val) the loop iterates; after ``build_model``, so a phase may derive them from it."""
        return ctx.data.train, ctx.data.val

    def upstream(self, ctx: RunContext) -> dict[str, str]:
        """Fingerprints of what this phase builds on (none for the first phase)."""
        return {}

    def version_tags(self, ctx: RunContext) -> dict[str, str]:
        return {}

    def package_checkpoint(self, ctx: RunContext, folder: Path) -> None:
        """Add files to the best checkpoint folder before it is logged and registered."""

    def check(self, cfg: DictConfig) -> None:
        """Refuse settings this phase cannot run with, before any phase starts."""

    def reported_metrics(self, cfg: DictConfig) -> list[str]:
        """Names of the job-run metrics this phase will report (an ``objective`` must be one);
        the first is the phase's own objective."""
        return [f"{self.name}_val_loss"]

    def report(self, result: PhaseResult) -> dict[str, float]:
        """The job-run metrics of a finished phase."""
        return {f"{self.name}_val_loss": result.val_loss}

    # -- shared ----------------------------------------------------------------------------
    def settings(self, ctx: RunContext) -> DictConfig:
        return ctx.cfg[self.name]

    def registered_name(self, ctx: RunContext) -> str:
        return ctx.cfg.mlflow[f"{self.name}_model_name"]

    def run(self, ctx: RunContext) -> PhaseResult:
        """Claim, train or reuse, register. Rank 0 decides and tracks; other ranks train on its word."""
        upstream = self.upstream(ctx)
        if not ctx.world.is_main:
            return self._follow(ctx)
        upstream = self.upstream(ctx)
        inputs = phase_fingerprint_inputs(ctx, self.name, upstream)
        fp = fingerprint(inputs)
        with ctx.tracker.phase_run(self.name, tags={"fingerprint": fp, **upstream}) as run:
            settings = OmegaConf.to_container(self.settings(ctx), resolve=True)
            mlflow.log_params(flatten({self.name: settings}))
            mlflow.log_dict(inputs, FINGERPRINT_ARTIFACT)
            result = self.execute(ctx, fp, run.info.run_id)
        return ctx.world.share(result)

    def _follow(self, ctx: RunContext) -> PhaseResult:
        """A rank other than 0: train along when rank 0's plan says so, then take its result."""
        if self.trains:
            self.upstream(ctx)  # rank 0 finds what this phase builds on; the others get its answer
            plan = ctx.world.share(None)
            if isinstance(plan, TrainPlan):
                self._fit(ctx, plan, log_metrics=lambda metrics, step: None, on_best=lambda *a: None)
        return ctx.world.share(None)

    def execute(self, ctx: RunContext, fp: str, run_id: str) -> PhaseResult:
        """Produce the phase's result inside its run: claim the fingerprint, then reuse a registered
        checkpoint, resume an unfinished run, or train, and register. A phase that trains nothing
        (evaluation) overrides this."""
        claims = Claims(ctx.tracker.client, ctx.tracker.experiment_id, ctx.cfg.mlflow.heartbeat_s)
        with claims.heartbeat(run_id):  # this run claims the fingerprint while it lives
            plan = self._plan(ctx, fp, claim(claims, self.name, fp, run_id,
                                             skip_existing=ctx.skip_existing, resume=ctx.resume))
            ctx.world.share(plan)
            return plan if isinstance(plan, PhaseResult) else self._train(ctx, fp, run_id, plan)

    def _plan(self, ctx: RunContext, fp: str, decided: Claim) -> PhaseResult | TrainPlan:
        """The claim's decision as this phase's result (reused) or training plan."""
        if decided.action == "resume":
            unfinished = decided.unfinished
            mlflow.set_tags({"skipped": "false", RESUMED_FROM_TAG: unfinished.run_id})
            log.info("%s: resuming run %s from %s", self.name, unfinished.run_id, unfinished.state_path)
            return TrainPlan(unfinished.state_path.parent / self.name, unfinished)
        if decided.action == "reuse":
            reused = self._reuse(ctx, fp)
            if reused is not None:
                return reused
        if ctx.resume:
            log.info("%s: resume=true but no unfinished run has fingerprint %s; training from the start",
                     self.name, fp[:12])
        mlflow.set_tag("skipped", "false")
        return TrainPlan(ctx.output_dir / "checkpoints" / self.name)

    def _reuse(self, ctx: RunContext, fp: str) -> PhaseResult | None:
        hit = ctx.registry.fetch(self.registered_name(ctx), fp, ctx.output_dir / "reused")
        if hit is None:
            log.info("%s: no registered checkpoint with fingerprint %s, training", self.name, fp[:12])
            return None
        version, folder = hit
        val_loss = float(version.tags.get("best_val_loss", "nan"))
        mlflow.set_tags({"skipped": "true", "reused_version": version.version, "reused_run_id": version.run_id})
        mlflow.log_metric("best_val_loss", val_loss)
        log.info("%s: reusing %s (fingerprint %s)", self.name, version.label, fp[:12])
        return PhaseResult(self.name, folder, fp, val_loss, version, skipped=True)

    def fit_settings(self, ctx: RunContext, plan: TrainPlan) -> FitSettings:
        from ..train.settings import fit_settings
        return fit_settings(OmegaConf.to_container(self.settings(ctx), resolve=True), device=ctx.device,
                            precision=ctx.precision, world=ctx.world, seed=phase_seed(ctx.cfg, self.name),
                            state_path=plan.state_path, resume=plan.resume_from is not None,
                            num_workers=ctx.cfg.num_workers, compile=ctx.cfg.compile,
                            checkpoint_every_steps=ctx.cfg.checkpoint_every_steps)

    def _fit(self, ctx: RunContext, plan: TrainPlan, log_metrics, on_best) -> FitResult:
        """Build the model from the phase's seed (the same on every rank) and train it."""
        seed_everything(phase_seed(ctx.cfg, self.name))
        model = self.build_model(ctx)
        n_params = sum(p.numel() for p in model.parameters())
        if ctx.world.is_main:
            mlflow.log_param(f"{self.name}.n_parameters", n_params)
        log.info("%s: training %s parameters on %d windows for %d epochs", self.name, f"{n_params:,}",
                 len(ctx.data.train), self.settings(ctx).epochs)
        train_set, val_set = self.datasets(ctx)
        return fit(model, self, train_set, val_set, self.fit_settings(ctx, plan),
                   log_metrics=log_metrics, on_best=on_best, desc=self.name)

    def _train(self, ctx: RunContext, fp: str, run_id: str, plan: TrainPlan) -> PhaseResult:
        """Rank 0: train (with the other ranks), then log and register the best checkpoint."""
        best_dir = plan.best_dir
        mlflow.set_tag(STATE_TAG, str(plan.state_path.resolve()))
        saved: dict[str, str] = {}  # sha256 of each file as this process wrote it

        def save_best(m: nn.Module, epoch: int, val_loss: float) -> None:
            m.save_pretrained(best_dir)
            saved.clear()
            saved.update(folder_digests(best_dir))

        result = self._fit(ctx, plan, log_metrics=ctx.tracker.log_metrics, on_best=save_best)
        ctx.tracker.wait_for_metrics()  # the checkpoint is on disk; a lost server may come back meanwhile
        if not saved and plan.resume_from is not None:  # the best so far was saved before the resume
            saved.update(folder_digests(best_dir))
        if result.best_epoch < 0:
            raise TrainingFailed(f"{self.name}: the validation loss was never finite ({result.val_history}); "
                             f"no checkpoint to keep. Lower {self.name}.lr or check the data")
        if folder_digests(best_dir) != saved:
            raise CheckpointError(f"{best_dir} changed after this run saved it (another process writing the same "
                                  "folder?); it is not registered. Give each run its own hydra.run.dir")
        mlflow.log_metrics({"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
                            "samples_per_second": result.samples_per_second, "duration_s": result.duration_s})
        self.package_checkpoint(ctx, best_dir)
        mlflow.log_artifacts(str(best_dir), CHECKPOINT_ARTIFACT)
        log_loss_curve(self.name, result)
        version = ctx.registry.register(
            self.registered_name(ctx), run_id, CHECKPOINT_ARTIFACT, saved, fp,
            tags={"phase": self.name, "best_val_loss": repr(result.best_val_loss),
                  "data_files": data_files_digest(ctx.data_fingerprint), **self.version_tags(ctx)})
        mlflow.set_tag("registered_version", version.version)
        plan.state_path.unlink(missing_ok=True)  # finished: nothing left to resume, and it can be large
        return PhaseResult(self.name, best_dir, fp, result.best_val_loss, version, skipped=False,
                           val_history=result.val_history, duration_s=result.duration_s)
