"""The one training loop every phase shares; a phase supplies only its model and its loss.

AdamW + OneCycle, gradient accumulation and clipping, mixed precision, a validation pass each
epoch, and a callback whenever the validation loss improves (the phase saves its best checkpoint
there). The loop never waits for the device inside an epoch except at ``log_interval``: loss
components are summed on the device and read once per log line and once per validation pass.
Under torchrun the model trains data-parallel (train/distributed.py); with ``state_path`` set the
loop keeps a resumable ``last`` training state (train/state.py) and stops for SIGINT/SIGTERM at
the next optimizer step, after saving it.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .batches import Batches, to_device
from .distributed import EpochSampler, World, all_reduce_sum, shard
from .interrupt import Interrupted, raise_if_stop_requested, stop, stop_requested, stops_at_step_boundary
from .precision import autocast, grad_scaler
from .state import TrainingState, restore_rng_states, rng_states

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
    resume: bool = False  # continue from state_path when it exists
    checkpoint_every_steps: int = 0  # also save `last` every N optimizer steps (0: once per epoch only)


@dataclass
class FitResult:
    best_val_loss: float
    best_epoch: int
    val_history: list[float] = field(default_factory=list)
    train_history: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    samples_per_second: float = 0.0
    duration_s: float = 0.0
    val_duration_s: float = 0.0  # of duration_s, the validation passes
    steps: int = 0
    resumed_at_step: int | None = None


class Sums:
    """Weighted sums of loss components kept on the device; ``means()`` is the only host sync."""

    def __init__(self) -> None:
        self.totals: dict[str, torch.Tensor] = {}
        self.weight = 0

    def add(self, parts: dict[str, torch.Tensor], weight: int = 1) -> None:
        for k, v in parts.items():
            v = v.detach().float() * weight
            self.totals[k] = self.totals[k] + v if k in self.totals else v
        self.weight += weight

    def means(self) -> dict[str, float]:
        if not self.totals:
            return {}
        keys = list(self.totals)
        values = (torch.stack([self.totals[k] for k in keys]) / max(self.weight, 1)).tolist()
        return dict(zip(keys, values))

    def all_reduce(self, world: World) -> "Sums":
        """The sums over every rank (each held a shard of the batches)."""
        if not world.distributed or not self.totals:
            return self
        keys = list(self.totals)
        reduced = all_reduce_sum(torch.stack([self.totals[k] for k in keys] + [
            torch.tensor(float(self.weight), device=self.totals[keys[0]].device)]))
        out = Sums()
        out.totals, out.weight = dict(zip(keys, reduced[:-1])), int(reduced[-1].item())
        return out

    def state_dict(self) -> dict:
        return {"totals": {k: v.cpu() for k, v in self.totals.items()}, "weight": self.weight}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "Sums":
        sums = cls()
        sums.totals, sums.weight = {k: v.to(device) for k, v in state["totals"].items()}, state["weight"]
        return sums


class Runner:
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


def make_optimizer(params: list[nn.Parameter], s: FitSettings) -> torch.optim.Optimizer:
    """AdamW; the fused kernel on CUDA. The state stays fp32 whatever the precision."""
    fused = {"fused": True} if s.device.type == "cuda" else {}
    return torch.optim.AdamW(params, lr=s.lr, betas=s.adam_betas, weight_decay=s.weight_decay, **fused)


def make_scheduler(optimizer: torch.optim.Optimizer, s: FitSettings, batches_per_epoch: int):
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / s.accumulation_steps))
    total_steps = s.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s.lr, total_steps=total_steps,
                                                    pct_start=s.pct_start, div_factor=10, final_div_factor=100)
    return scheduler, total_steps


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
    means = sums.all_reduce(s.world).means()
    means.update(objective.epoch_metrics(model, metrics_loader or loader))
    return means


def fit(model: nn.Module, objective: Objective, train_set, val_set, s: FitSettings,
        log_metrics: Callable[[dict[str, float], int], None], on_best: Callable[[nn.Module, int, float], None],
        desc: str = "train") -> FitResult:
    """Train ``model``; ``log_metrics(metrics, step)`` receives train metrics at global steps and
    validation metrics (prefixed ``val_``) at step = epoch. SIGINT/SIGTERM stop it at the next
    optimizer step, after saving the training state (when ``state_path`` is set)."""
    with stops_at_step_boundary():
        return _fit(model, objective, train_set, val_set, s, log_metrics, on_best, desc)


def _fit(model, objective, train_set, val_set, s: FitSettings, log_metrics, on_best, desc) -> FitResult:
    world = s.world
    generator = torch.Generator().manual_seed(s.seed)  # the loaders' own: iterating draws nothing global
    sampler = EpochSampler(train_set, world, s.seed)
    train_loader, val_loader = make_loaders(train_set, val_set, s, sampler, generator)
    metrics_loader = Batches(val_set, s.batch_size) if world.distributed else val_loader
    model.to(s.device)
    trained = (DistributedDataParallel(model, device_ids=[s.device] if s.device.type == "cuda" else None)
               if world.distributed else model)
    runner = Runner(trained, s.compile)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, s)
    n_batches = len(train_loader)
    scheduler, total_steps = make_scheduler(optimizer, s, n_batches)
    scaler = grad_scaler(s.device, s.precision)
    result = FitResult(best_val_loss=math.inf, best_epoch=-1)
    samples, step, first_epoch, batches_done, prior_seconds = 0, 0, 0, 0, 0.0
    window = Sums()
    if s.resume and s.state_path is not None and s.state_path.is_file():
        state = TrainingState.load(s.state_path)
        if state.world_size != world.world_size:
            raise ValueError(f"{s.state_path} was saved by {state.world_size} process(es) and this run has "
                             f"{world.world_size}; resume with the same --nproc_per_node, or resume=false")
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if state.scaler:
            scaler.load_state_dict(state.scaler)
        restore_rng_states(state.rng, generator)
        first_epoch, batches_done, step, samples = state.epoch, state.batches_done, state.step, state.samples
        prior_seconds, window = state.train_seconds, Sums.from_state(state.window, s.device)
        result.best_val_loss, result.best_epoch = state.best_val_loss, state.best_epoch
        result.val_history, result.train_history = state.val_history, state.train_history
        result.resumed_at_step = step
        log.info("%s: resuming from %s (epoch %d, batch %d of %d, step %d)", desc, s.state_path,
                 first_epoch + 1, batches_done, n_batches, step)
    started = time.perf_counter() - prior_seconds
    loader_rng = generator.get_state()

    def save_state(epoch: int, done: int) -> None:
        if s.state_path is None or not world.is_main:  # one writer: every rank holds the same state
            return
        TrainingState(epoch=epoch, batches_done=done, step=step, world_size=world.world_size,
                      model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                      scaler=scaler.state_dict(), rng={**rng_states(generator), "loader": loader_rng},
                      best_val_loss=result.best_val_loss, best_epoch=result.best_epoch,
                      val_history=list(result.val_history), train_history=list(result.train_history),
                      samples=samples, train_seconds=time.perf_counter() - started,
                      window=window.state_dict()).save(s.state_path)

    def stop_agreed(logged: bool) -> bool:
        """Whether a stop was asked for. Under DDP all ranks must stop at the same step: they agree
        at the steps that log, which wait for the device anyway, not at every step."""
        if not world.distributed:
            return stop_requested()
        return logged and all_reduce_sum(torch.tensor([float(stop_requested())], device=s.device)).item() > 0

    for epoch in range(first_epoch, s.epochs):
        trained.train()
        sampler.set_epoch(epoch)
        sampler.skip = batches_done * s.batch_size
        loader_rng = generator.get_state()  # worker seeds of this epoch come from it
        # disable=None: a live bar on a terminal, nothing in CI logs or piped output.
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{s.epochs}", leave=False, dynamic_ncols=True,
                   disable=None if world.is_main else True, initial=batches_done, total=n_batches)
        for i, batch in enumerate(bar, start=batches_done):
            batch = to_device(batch, s.device)
            last_in_epoch = i + 1 == n_batches
            boundary = not (i + 1) % s.accumulation_steps or last_in_epoch
            # Micro-batches before a step's last keep their gradients local: one all-reduce per step.
            with contextlib.nullcontext() if boundary or not world.distributed else trained.no_sync():
                window.add(runner(lambda m: forward_backward(m, objective, batch, s, scaler)))
            samples += batch[0].shape[0] * world.world_size
            if not boundary:
                continue
            optimizer_step(optimizer, scaler, params, s.grad_clip)
            lr = scheduler.get_last_lr()[0]
            if step < total_steps - 1:
                scheduler.step()
            step += 1
            logged = step % s.log_interval == 0 or last_in_epoch
            if logged:
                means = window.all_reduce(world).means()
                rate = samples / (time.perf_counter() - started)
                metrics = {"train_loss": means.pop("loss"), "lr": lr, "samples_per_second": rate}
                metrics.update({f"train_{k}": v for k, v in means.items()})
                log_metrics(metrics, step)
                result.train_history.append((step, metrics["train_loss"]))
                bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", samples_s=f"{rate:.0f}")
                window = Sums()
            if stop_agreed(logged):
                save_state(epoch, i + 1)
                raise stop(f"{desc}: stopped at step {step}")
            if s.checkpoint_every_steps and step % s.checkpoint_every_steps == 0:
                save_state(epoch, i + 1)
        batches_done = 0
        val_started = time.perf_counter()
        try:
            # The bare eager model: under DDP validation shards may differ by a batch between ranks
            # (DDP's forward would run collectives on some ranks only), and with compile=true a
            # no-grad graph and the last partial batch would each recompile, costing more than
            # compiled validation ever saves (validation is a few % of an epoch's work).
            val = evaluate(model, objective, val_loader, s, metrics_loader)
        except Interrupted:  # evaluating changes nothing: the state is the end of this epoch's training
            save_state(epoch, n_batches)
            raise
        result.val_duration_s += time.perf_counter() - val_started
        val_loss = val[objective.val_key]
        log_metrics({**{f"val_{k}": v for k, v in val.items()}, "val_loss": val_loss}, epoch)
        result.val_history.append(val_loss)
        log.info("%s epoch %d/%d: train_loss %.5f  val_loss %.5f  %.0f samples/s", desc, epoch + 1, s.epochs,
                 result.train_history[-1][1], val_loss, samples / (time.perf_counter() - started))
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            on_best(model, epoch, val_loss)
        loader_rng = generator.get_state()
        save_state(epoch + 1, 0)
    result.duration_s = time.perf_counter() - started
    result.samples_per_second = samples / max(result.duration_s, 1e-9)
    result.steps = step
    return result
