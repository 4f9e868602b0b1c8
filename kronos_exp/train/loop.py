"""The one training loop every phase shares; a phase supplies only its model and its loss.

AdamW + OneCycle, gradient accumulation and clipping, mixed precision, a validation pass each
epoch, and a callback whenever the validation loss improves (the phase saves its best checkpoint
there). The loop never waits for the device inside an epoch except at ``log_interval``: loss
components are summed on the device and read once per log line and once per validation pass.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import Batches, to_device
from .interrupt import raise_if_stop_requested
from .precision import autocast, grad_scaler

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


def make_loaders(train_set, val_set, s: FitSettings) -> tuple[Batches, Batches]:
    """Shuffled training batches (the last partial one dropped when there is more than one batch)
    and validation batches in order."""
    pin = s.device.type == "cuda"
    generator = torch.Generator().manual_seed(s.seed)
    train = Batches(train_set, s.batch_size, shuffle=True, drop_last=len(train_set) > s.batch_size,
                    generator=generator, num_workers=s.num_workers, pin_memory=pin)
    val = Batches(val_set, s.batch_size, num_workers=s.num_workers, pin_memory=pin)
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
def evaluate(model: nn.Module, objective: Objective, loader: Iterable, s: FitSettings) -> dict[str, float]:
    """Sample-weighted means of every loss component over a loader, plus the epoch metrics."""
    model.eval()
    sums = Sums()
    for batch in loader:
        raise_if_stop_requested()
        batch = to_device(batch, s.device)
        with autocast(s.device, s.precision):
            parts = objective.loss(model, batch)
        sums.add(parts, batch[0].shape[0])
    means = sums.means()
    means.update(objective.epoch_metrics(model, loader))
    return means


def fit(model: nn.Module, objective: Objective, train_set, val_set, s: FitSettings,
        log_metrics: Callable[[dict[str, float], int], None], on_best: Callable[[nn.Module, int, float], None],
        desc: str = "train") -> FitResult:
    """Train ``model``; ``log_metrics(metrics, step)`` receives train metrics at global steps and
    validation metrics (prefixed ``val_``) at step = epoch."""
    train_loader, val_loader = make_loaders(train_set, val_set, s)
    model.to(s.device)
    runner = Runner(model, s.compile)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, s)
    scheduler, total_steps = make_scheduler(optimizer, s, len(train_loader))
    scaler = grad_scaler(s.device, s.precision)
    result = FitResult(best_val_loss=math.inf, best_epoch=-1)
    started, samples, step = time.perf_counter(), 0, 0
    n_batches = len(train_loader)
    for epoch in range(s.epochs):
        model.train()
        window = Sums()
        # disable=None: a live bar on a terminal, nothing in CI logs or piped output.
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{s.epochs}", leave=False, dynamic_ncols=True,
                   disable=None)
        for i, batch in enumerate(bar):
            raise_if_stop_requested()
            batch = to_device(batch, s.device)
            window.add(runner(lambda m: forward_backward(m, objective, batch, s, scaler)))
            samples += batch[0].shape[0]
            last_in_epoch = i + 1 == n_batches
            if (i + 1) % s.accumulation_steps and not last_in_epoch:
                continue
            optimizer_step(optimizer, scaler, params, s.grad_clip)
            lr = scheduler.get_last_lr()[0]
            if step < total_steps - 1:
                scheduler.step()
            step += 1
            if step % s.log_interval == 0 or last_in_epoch:
                means = window.means()
                rate = samples / (time.perf_counter() - started)
                metrics = {"train_loss": means.pop("loss"), "lr": lr, "samples_per_second": rate}
                metrics.update({f"train_{k}": v for k, v in means.items()})
                log_metrics(metrics, step)
                result.train_history.append((step, metrics["train_loss"]))
                bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", samples_s=f"{rate:.0f}")
                window = Sums()
        val_started = time.perf_counter()
        val = runner(lambda m: evaluate(m, objective, val_loader, s))
        result.val_duration_s += time.perf_counter() - val_started
        val_loss = val[objective.val_key]
        log_metrics({**{f"val_{k}": v for k, v in val.items()}, "val_loss": val_loss}, epoch)
        result.val_history.append(val_loss)
        log.info("%s epoch %d/%d: train_loss %.5f  val_loss %.5f  %.0f samples/s", desc, epoch + 1, s.epochs,
                 result.train_history[-1][1], val_loss, samples / (time.perf_counter() - started))
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            on_best(model, epoch, val_loss)
    result.duration_s = time.perf_counter() - started
    result.samples_per_second = samples / max(result.duration_s, 1e-9)
    result.steps = step
    return result
