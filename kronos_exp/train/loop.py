"""The one training loop every phase shares; a phase supplies only its model and its loss.

AdamW + OneCycle, gradient accumulation and clipping, optional bf16 autocast, a validation
pass each epoch, and a callback whenever the validation loss improves (the phase saves its
best checkpoint there).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .interrupt import raise_if_stop_requested
from .precision import autocast

log = logging.getLogger(__name__)


class Objective(Protocol):
    """What a phase plugs into the loop."""

    val_key: str  # component whose validation mean is the phase's val_loss

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Components of one batch; ``loss`` is what gets minimised."""

    def epoch_metrics(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
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


@dataclass
class FitResult:
    best_val_loss: float
    best_epoch: int
    val_history: list[float] = field(default_factory=list)
    train_history: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    samples_per_second: float = 0.0
    duration_s: float = 0.0
    steps: int = 0


def _mean_components(totals: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(count, 1) for k, v in totals.items()}


@torch.no_grad()
def evaluate(model: nn.Module, objective: Objective, loader: DataLoader, s: FitSettings) -> dict[str, float]:
    """Sample-weighted means of every loss component over a loader, plus the epoch metrics."""
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    for batch in loader:
        raise_if_stop_requested()
        batch = [t.to(s.device, non_blocking=True) for t in batch]
        with autocast(s.device, s.precision):
            parts = objective.loss(model, batch)
        n = batch[0].shape[0]
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    means = _mean_components(totals, count)
    means.update(objective.epoch_metrics(model, loader))
    return means


def fit(model: nn.Module, objective: Objective, train_set: Dataset, val_set: Dataset, s: FitSettings,
        log_metrics: Callable[[dict[str, float], int], None], on_best: Callable[[nn.Module, int, float], None],
        desc: str = "train") -> FitResult:
    """Train ``model``; ``log_metrics(metrics, step)`` receives train metrics at global steps and
    validation metrics (prefixed ``val_``) at step = epoch."""
    generator = torch.Generator().manual_seed(s.seed)
    train_loader = DataLoader(train_set, batch_size=s.batch_size, shuffle=True, drop_last=len(train_set) > s.batch_size,
                              num_workers=s.num_workers, generator=generator)
    val_loader = DataLoader(val_set, batch_size=s.batch_size, shuffle=False, num_workers=s.num_workers)
    model.to(s.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, betas=s.adam_betas, weight_decay=s.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / s.accumulation_steps))
    total_steps = s.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s.lr, total_steps=total_steps,
                                                    pct_start=s.pct_start, div_factor=10, final_div_factor=100)
    result = FitResult(best_val_loss=math.inf, best_epoch=-1)
    started, samples, step = time.perf_counter(), 0, 0
    for epoch in range(s.epochs):
        model.train()
        window: dict[str, float] = {}
        window_batches = 0
        # disable=None: a live bar on a terminal, nothing in CI logs or piped output.
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{s.epochs}", leave=False, dynamic_ncols=True,
                   disable=None)
        for i, batch in enumerate(bar):
            raise_if_stop_requested()
            batch = [t.to(s.device, non_blocking=True) for t in batch]
            with autocast(s.device, s.precision):
                parts = objective.loss(model, batch)
            (parts["loss"] / s.accumulation_steps).backward()
            for k, v in parts.items():
                window[k] = window.get(k, 0.0) + float(v.detach())
            window_batches += 1
            samples += batch[0].shape[0]
            last_in_epoch = i + 1 == len(train_loader)
            if (i + 1) % s.accumulation_steps and not last_in_epoch:
                continue
            if s.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, s.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            if step < total_steps - 1:
                scheduler.step()
            step += 1
            if step % s.log_interval == 0 or last_in_epoch:
                means = _mean_components(window, window_batches)
                rate = samples / (time.perf_counter() - started)
                metrics = {"train_loss": means.pop("loss"), "lr": lr, "samples_per_second": rate}
                metrics.update({f"train_{k}": v for k, v in means.items()})
                log_metrics(metrics, step)
                result.train_history.append((step, metrics["train_loss"]))
                bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", samples_s=f"{rate:.0f}")
                window, window_batches = {}, 0
        val = evaluate(model, objective, val_loader, s)
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
