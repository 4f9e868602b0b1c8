"""The one training loop every phase shares; a phase supplies only its model and its loss.

The optimizer and schedule a phase's config names (train/optim.py; AdamW + OneCycle by default),
gradient accumulation and clipping, mixed precision, a validation pass each
epoch, and a callback whenever the validation loss improves (the phase saves its best checkpoint
there); with ``patience`` set it stops once the validation loss has gone that many epochs without
improving (early stopping), judged from the validation history alone, so a resumed run stops where
an uninterrupted one does. The loop never waits for the device inside an epoch except at
``log_interval``: loss components are summed on the device and read once per log line and once per
validation pass. Under torchrun the model trains data-parallel (train/distributed.py); with
``state_path`` set the loop keeps a resumable ``last`` training state (train/state.py) and stops for
SIGINT/SIGTERM at the next optimizer step, after saving it.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..heap import keep_freed_memory
from .batches import Batches, to_device
from .distributed import EpochSampler, World, all_gather, all_reduce_sum, shard
from .interrupt import Interrupted, raise_if_stop_requested, stop, stop_requested, stops_at_step_boundary
from .optim import make_optimizer, make_scheduler, param_groups
from .precision import autocast, grad_scaler
from .state import (StateUnreadable, TrainingState, global_rng_states, restore_rng_states, rng_states,
                    seed_training_noise)
from .sums import Sums

log = logging.getLogger(__name__)


class Objective(Protocol):
    """What a phase plugs into the loop."""

    val_key: str  # component whose validation mean is the phase's val_loss

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Components of one batch; ``loss`` is what gets minimised."""

    def epoch_metrics(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        """Extra validation metrics computed once per epoch (may be empty)."""


@dataclass
class FitSettings:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    adam_betas: tuple[float, float]
    pct_start: float
    grad_clip: float
    accumulation_steps: int
    log_interval: int
    device: torch.device
    precision: str = "fp32"
    num_workers: int = 0
    seed: int = 0
    compile: bool = False
    world: World = field(default_factory=World)
    state_path: Path | None = None  # where the resumable `last` state lives; None: keep none
    resume: bool = False  # continue from resume_from (default: state_path) when it exists
    resume_from: Path | None = None  # a state another run saved (verified by the caller); saves go to state_path
    checkpoint_every_steps: int = 0  # also save `last` every N optimizer steps (0: once per epoch only)
    # Partials from a phase's config (train/settings.py): optimizer(params), scheduler(optimizer,
    # total_steps=...). None: AdamW and OneCycle from the fields above (train/optim.py).
    optimizer: Callable[..., Any] | None = None
    scheduler: Callable[..., Any] | None = None
    no_decay_groups: bool = False  # biases, norms and embeddings take no weight decay
    patience: int | None = None  # stop after this many epochs without improving by > min_delta; None: never
    min_delta: float = 0.0


@dataclass
class FitResult:
    best_val_loss: float
    best_epoch: int
    val_history: list[float] = field(default_factory=list)
    train_history: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    samples_per_second: float = 0.0  # the whole phase's, validation included (an epoch's own: EpochClock)
    duration_s: float = 0.0
    val_duration_s: float = 0.0  # of duration_s, the validation passes
    steps: int = 0
    resumed_at_step: int | None = None
    stopped_epoch: int | None = None  # the last epoch trained when early stopping ended training; None: all ran


class EpochClock:
    """The training rate of the epoch in progress: the samples this process has trained in it (all
    ranks together) over the time since this process began it; the validation pass is not in it.
    The phase's overall rate, validation included, is FitResult.samples_per_second."""

    def __init__(self) -> None:
        self.start(0)

    def start(self, samples: int) -> None:
        """The epoch (or, resumed, this process's part of it) begins with ``samples`` trained so far."""
        self.samples, self.started = samples, time.perf_counter()

    def rate(self, samples: int) -> float:
        """Samples/s of this epoch, given the samples trained so far."""
        return (samples - self.samples) / max(time.perf_counter() - self.started, 1e-9)


class CompiledModel:
    """The module the loss calls: ``torch.compile`` of the model where asked, falling back to the
    eager model, with one warning, if compiling fails (no compiler, an unsupported op ...)."""

    def __init__(self, model: nn.Module, compile: bool):
        self.eager = model
        self.module = torch.compile(model) if compile else model

    def __call__(self, fn: Callable[[nn.Module], object]):
        if self.module is self.eager:
            return fn(self.eager)
        try:
            return fn(self.module)
        except Exception as e:  # compilation errors surface at the first call, in many types
            first_line = (str(e).strip().splitlines() or [""])[0][:300]
            warnings.warn(f"compile=true failed ({type(e).__name__}: {first_line}); training without compilation",
                          RuntimeWarning, stacklevel=2)
            self.module = self.eager
            return fn(self.eager)


def on_gpu(dataset, device: torch.device):
    """Raw windows (a WindowDataset) gathered and normalized on a CUDA device, not built on the
    host and copied per batch; other datasets (the token cache is on the device already) as they are."""
    return dataset.on(device) if device.type == "cuda" and hasattr(dataset, "on") else dataset


def make_loaders(train_set, val_set, s: FitSettings, sampler: EpochSampler,
                 generator: torch.Generator) -> tuple[Batches, Batches]:
    """This rank's shuffled training batches (the last partial one dropped when there is more than
    one batch) and its shard of the validation batches, in order."""
    pin = s.device.type == "cuda"
    train_set, val_set = on_gpu(train_set, s.device), on_gpu(val_set, s.device)
    train = Batches(train_set, s.batch_size, shuffle=True, sampler=sampler,
                    drop_last=len(train_set) > s.batch_size * s.world.world_size,
                    generator=generator, num_workers=s.num_workers, pin_memory=pin)
    val = Batches(val_set, s.batch_size, num_workers=s.num_workers, pin_memory=pin,
                  sampler=shard(len(val_set), s.world) if s.world.distributed else None)
    return train, val


def forward_backward(model: nn.Module, objective: Objective, batch, s: FitSettings, scaler) -> dict[str, torch.Tensor]:
    """One micro-batch: the loss under autocast, then its (scaled) gradient."""
    with autocast(s.device, s.precision):
        parts = objective.loss(model, batch)
    scaler.scale(parts["loss"] / s.accumulation_steps).backward()
    return parts


def optimizer_step(optimizer: torch.optim.Optimizer, scaler, params: list[nn.Parameter], grad_clip: float) -> None:
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model: nn.Module, objective: Objective, loader: Iterable, s: FitSettings,
             metrics_loader: Iterable | None = None) -> dict[str, float]:
    """Sample-weighted means of every loss component over a loader (over all ranks' shards under
    DDP), plus the epoch metrics over ``metrics_loader`` (default: ``loader``)."""
    model.eval()
    sums = Sums()
    for batch in loader:
        raise_if_stop_requested()
        batch = to_device(batch, s.device)
        with autocast(s.device, s.precision):
            parts = objective.loss(model, batch)
        sums.add(parts, batch[0].shape[0])
    means = sums.all_reduce(s.world, s.device).means()
    means.update(objective.epoch_metrics(model, metrics_loader or loader))
    return means


def fit(model: nn.Module, objective: Objective, train_set, val_set, s: FitSettings,
        log_metrics: Callable[[dict[str, float], int], None], on_best: Callable[[nn.Module, int, float], None],
        desc: str = "train", on_state_saved: Callable[[str], None] | None = None,
        on_epoch_end: Callable[[int, float, bool], None] | None = None) -> FitResult:
    """Train ``model``; ``log_metrics(metrics, step)`` receives train metrics at global steps and
    validation metrics (prefixed ``val_``) at step = epoch. SIGINT/SIGTERM stop it at the next
    optimizer step, after saving the training state (when ``state_path`` is set).
    ``on_state_saved(sha256)`` hears of each new state once it is on disk, before it replaces the
    previous one (the caller records the digest it will accept when resuming).
    ``on_epoch_end(epoch, val_loss, last)`` hears each epoch's validation loss, after ``on_best``,
    and whether no epoch follows; an exception it raises stops training (a search's pruner does so)."""
    keep_freed_memory()
    with stops_at_step_boundary():
        return _Training(model, objective, train_set, val_set, s, desc, on_state_saved,
                         on_epoch_end).run(log_metrics, on_best)




def epochs_without_improvement(val_history: list[float], min_delta: float) -> int:
    """The epochs since the validation loss last fell below the best before it by more than
    ``min_delta`` (all of them where it never did: a loss never finite)."""
    best, waited = math.inf, 0
    for loss in val_history:
        if loss < best - min_delta:
            best, waited = loss, 0
        else:
            waited += 1
    return waited


def load_state(path: Path) -> TrainingState:
    try:
        return TrainingState.load(path)
    except StateUnreadable as err:  # the caller checked its digest: written so, or by someone else
        raise StateUnreadable(f"{err}; it is not resumed again: run the same command to train this phase "
                              "from the start") from None


class _Training:
    """One ``fit``: built in order (loaders, model, optimizer, schedule), optionally resumed from
    the ``last`` state, then run epoch by epoch, each a training pass and a validation pass."""

    def __init__(self, model: nn.Module, objective: Objective, train_set, val_set, s: FitSettings, desc: str,
                 on_state_saved: Callable[[str], None] | None = None,
                 on_epoch_end: Callable[[int, float, bool], None] | None = None):
        self.model, self.objective, self.s, self.desc, world = model, objective, s, desc, s.world
        self.on_state_saved, self.on_epoch_end = on_state_saved, on_epoch_end
        seed_training_noise(s.seed, world.rank)  # the model is built: from here on each rank draws its own
        self.generator = torch.Generator().manual_seed(s.seed)  # the loaders' own: iterating draws nothing global
        self.sampler = EpochSampler(train_set, world, s.seed)
        self.train_loader, self.val_loader = make_loaders(train_set, val_set, s, self.sampler, self.generator)
        self.metrics_loader = Batches(val_set, s.batch_size) if world.distributed else self.val_loader
        model.to(s.device)
        self.trained = (DistributedDataParallel(model, device_ids=[s.device] if s.device.type == "cuda" else None)
                        if world.distributed else model)
        self.compiled = CompiledModel(self.trained, s.compile)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(param_groups(model, s.no_decay_groups), s)
        self.n_batches = len(self.train_loader)
        self.scheduler, self.total_steps = make_scheduler(self.optimizer, s, self.n_batches)
        self.scaler = grad_scaler(s.device, s.precision)
        self.result = FitResult(best_val_loss=math.inf, best_epoch=-1)
        self.samples, self.step, self.first_epoch, self.batches_done, prior_seconds = 0, 0, 0, 0, 0.0
        self.window = Sums()
        self.epoch_clock, self.epoch_rate = EpochClock(), 0.0
        self.peers_after_training: list[dict[str, Any]] = []
        source = s.resume_from or s.state_path
        if s.resume and source is not None and source.is_file():
            prior_seconds = self.resume(load_state(source), source)
        self.started = time.perf_counter() - prior_seconds
        self.loader_rng = self.generator.get_state()

    def resume(self, state: TrainingState, source: Path) -> float:
        """Take up the state saved in ``source``; returns the seconds it had trained."""
        s, result = self.s, self.result
        if state.world_size != s.world.world_size:
            raise ValueError(f"{source} was saved by {state.world_size} process(es) and this run has "
                             f"{s.world.world_size}; resume with the same --nproc_per_node, or resume=false")
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        restore_rng_states(state.rng, self.generator, s.world.rank)
        self.first_epoch, self.batches_done, self.step, self.samples = (state.epoch, state.batches_done, state.step,
                                                                        state.samples)
        self.window = Sums.from_state(state.window, s.device)
        result.best_val_loss, result.best_epoch = state.best_val_loss, state.best_epoch
        result.val_history, result.train_history = state.val_history, state.train_history
        result.resumed_at_step = self.step
        log.info("%s: resuming from %s (epoch %d, batch %d of %d, step %d)", self.desc, source,
                 self.first_epoch + 1, self.batches_done, self.n_batches, self.step)
        return state.train_seconds

    def run(self, log_metrics: Callable[[dict[str, float], int], None],
            on_best: Callable[[nn.Module, int, float], None]) -> FitResult:
        for epoch in range(self.first_epoch, self.s.epochs):
            if self.stops_early(epoch):
                break
            self.train_epoch(epoch, log_metrics)
            self.validate(epoch, log_metrics, on_best)
            self.loader_rng = self.generator.get_state()
            self.save_state(epoch + 1, 0)
        result = self.result
        result.duration_s = time.perf_counter() - self.started
        result.samples_per_second = self.samples / max(result.duration_s, 1e-9)
        result.steps = self.step
        return result

    def stops_early(self, epoch: int) -> bool:
        """Whether early stopping ends training before ``epoch``. Rank 0's verdict on every rank, so
        that all stop at the same epoch; asked before each epoch rather than after a validation, so
        a run resumed from the state saved after its last epoch stops there too."""
        s, result = self.s, self.result
        if s.patience is None or not s.world.share(self.patience_spent()):
            return False
        waited = epochs_without_improvement(result.val_history, s.min_delta)
        result.stopped_epoch = epoch - 1
        log.info("%s: stopping early after epoch %d/%d: val_loss has not improved by more than %g for %d epoch(s); "
                 "best %.5f at epoch %d", self.desc, epoch, s.epochs, s.min_delta, waited, result.best_val_loss,
                 result.best_epoch + 1)
        return True

    def patience_spent(self) -> bool:
        """Whether early stopping ends training after the epochs validated so far (this rank's view)."""
        return self.s.patience is not None and epochs_without_improvement(
            self.result.val_history, self.s.min_delta) >= self.s.patience

    def train_epoch(self, epoch: int, log_metrics: Callable[[dict[str, float], int], None]) -> None:
        """One pass over this rank's training batches, from ``batches_done`` on when resumed."""
        s, world = self.s, self.s.world
        self.trained.train()
        self.sampler.set_epoch(epoch)
        self.sampler.skip = self.batches_done * s.batch_size
        self.loader_rng = self.generator.get_state()  # worker seeds of this epoch come from it
        self.epoch_clock.start(self.samples)
        # disable=None: a live bar on a terminal, nothing in CI logs or piped output.
        bar = tqdm(self.train_loader, desc=f"{self.desc} epoch {epoch + 1}/{s.epochs}", leave=False,
                   dynamic_ncols=True, disable=None if world.is_main else True, initial=self.batches_done,
                   total=self.n_batches)
        for i, batch in enumerate(bar, start=self.batches_done):
            batch = to_device(batch, s.device)
            last_in_epoch = i + 1 == self.n_batches
            boundary = not (i + 1) % s.accumulation_steps or last_in_epoch
            # Micro-batches before a step's last keep their gradients local: one all-reduce per step.
            with contextlib.nullcontext() if boundary or not world.distributed else self.trained.no_sync():
                self.window.add(self.compiled(lambda m: forward_backward(m, self.objective, batch, s, self.scaler)))
            self.samples += batch[0].shape[0] * world.world_size
            if boundary:
                self.after_step(epoch, i + 1, last_in_epoch, bar, log_metrics)
        self.epoch_rate = self.epoch_clock.rate(self.samples)
        self.batches_done = 0
        self.peers_after_training = self.peer_rng_states()  # for a stop during validation

    def after_step(self, epoch: int, done: int, last_in_epoch: bool, bar, log_metrics) -> None:
        """Step the optimizer and schedule; log, stop or save the state where due."""
        s = self.s
        optimizer_step(self.optimizer, self.scaler, self.params, s.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        if self.step < self.total_steps - 1:
            self.scheduler.step()
        self.step += 1
        logged = self.step % s.log_interval == 0 or last_in_epoch
        if logged:
            self.log_window(lr, bar, log_metrics)
        if self.stop_agreed(logged):
            self.save_state(epoch, done)
            raise stop(f"{self.desc}: stopped at step {self.step}")
        if s.checkpoint_every_steps and self.step % s.checkpoint_every_steps == 0:
            self.save_state(epoch, done)

    def log_window(self, lr: float, bar, log_metrics) -> None:
        """The train-loss means since the last log line (over all ranks), the lr and the epoch's rate so far."""
        means = self.window.all_reduce(self.s.world, self.s.device).means()
        rate = self.epoch_clock.rate(self.samples)
        metrics = {"train_loss": means.pop("loss"), "lr": lr, "samples_per_second": rate}
        metrics.update({f"train_{k}": v for k, v in means.items()})
        log_metrics(metrics, self.step)
        self.result.train_history.append((self.step, metrics["train_loss"]))
        bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", samples_s=f"{rate:.0f}")
        self.window = Sums()

    def stop_agreed(self, logged: bool) -> bool:
        """Whether a stop was asked for. Under DDP all ranks must stop at the same step: they agree
        at the steps that log, which wait for the device anyway, not at every step."""
        if not self.s.world.distributed:
            return stop_requested()
        return logged and all_reduce_sum(torch.tensor([float(stop_requested())], device=self.s.device)).item() > 0

    def validate(self, epoch: int, log_metrics, on_best) -> None:
        """The validation pass after an epoch's training; ``on_best`` when the loss improved."""
        s, result = self.s, self.result
        val_started = time.perf_counter()
        try:
            # The bare eager model: under DDP validation shards may differ by a batch between ranks
            # (DDP's forward would run collectives on some ranks only), and with compile=true a
            # no-grad graph and the last partial batch would each recompile, costing more than
            # compiled validation ever saves (validation is a few % of an epoch's work).
            val = evaluate(self.model, self.objective, self.val_loader, s, self.metrics_loader)
        except Interrupted:  # evaluating changes nothing: the state is the end of this epoch's training
            self.save_state(epoch, self.n_batches, self.peers_after_training)
            raise
        result.val_duration_s += time.perf_counter() - val_started
        val_loss = val[self.objective.val_key]
        log_metrics({**{f"val_{k}": v for k, v in val.items()}, "val_loss": val_loss}, epoch)
        result.val_history.append(val_loss)
        log.info("%s epoch %d/%d: train_loss %.5f  val_loss %.5f  %.0f samples/s", self.desc, epoch + 1, s.epochs,
                 result.train_history[-1][1], val_loss, self.epoch_rate)
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            on_best(self.model, epoch, val_loss)
        if self.on_epoch_end is not None:  # the last epoch: the phase's last, or early stopping's
            self.on_epoch_end(epoch, val_loss, epoch == s.epochs - 1 or self.patience_spent())

    def peer_rng_states(self) -> list[dict[str, Any]]:
        """The global generators of ranks 1, 2, ... (on every rank; a collective under DDP, so
        every rank calls it at the same point); none when no state is kept."""
        if self.s.state_path is None or not self.s.world.distributed:
            return []
        return all_gather(global_rng_states())[1:]

    def save_state(self, epoch: int, done: int, peers: list[dict[str, Any]] | None = None) -> None:
        """The resumable ``last`` state at an optimizer-step boundary; one writer: every rank holds
        the same state but its own random generators, which rank 0 gathers (``peers``: gathered
        earlier, when the ranks may not all be here)."""
        s, result = self.s, self.result
        peers = self.peer_rng_states() if peers is None else peers
        if s.state_path is None or not s.world.is_main:
            return
        rng = {**rng_states(self.generator), "loader": self.loader_rng}
        if s.world.distributed:
            rng["peers"] = peers
        TrainingState(epoch=epoch, batches_done=done, step=self.step, world_size=s.world.world_size,
                      model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                      scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                      rng=rng,
                      best_val_loss=result.best_val_loss, best_epoch=result.best_epoch,
                      val_history=list(result.val_history), train_history=list(result.train_history),
                      samples=self.samples, train_seconds=time.perf_counter() - self.started,
                      window=self.window.state_dict()).save(s.state_path, self.on_state_saved)
