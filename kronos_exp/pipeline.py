"""One invocation: load the data, run the configured phases in order inside one MLflow run, report."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import mlflow
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .config import check_settings
from .data import build_datasets, resolve_paths
from .errors import USER_ERRORS
from .phases import Phase, PhaseResult, RunContext
from .tracking import Registry, Tracker, TrackingUnavailable, file_digest
from .tracking.sweep import JobInfo
from .train import distributed, resolve_device, resolve_precision
from .train.distributed import World
from .train.interrupt import exit_code, sigterm_stops

log = logging.getLogger(__name__)


def build_phases(cfg: DictConfig) -> list[Phase]:
    if not cfg.phases:
        raise ValueError("no phases configured; use phases=both, phases=tokenizer or phases=predictor")
    phases = [instantiate(spec) for spec in cfg.phases.values()]
    for key, phase in zip(cfg.phases, phases):
        if not isinstance(phase, Phase):
            raise TypeError(f"phases.{key}._target_ built a {type(phase).__name__}, not a kronos_exp Phase")
    return phases


def check_objective(cfg: DictConfig, phases: list[Phase]) -> None:
    """``objective`` must name a phase of this run, checked before any training."""
    names = [f"{p.name}_val_loss" for p in phases]
    if cfg.objective is not None and cfg.objective not in names:
        raise ValueError(f"objective={cfg.objective} but this run has only {', '.join(names)}; "
                         "use one of those, or objective=null for the last phase's val_loss")


def objective_value(cfg: DictConfig, val_losses: dict[str, float]) -> float:
    """The number sweepers minimise: ``cfg.objective`` (``<phase>_val_loss``), or the last phase's."""
    return val_losses[cfg.objective] if cfg.objective is not None else list(val_losses.values())[-1]


def _banner(cfg: DictConfig, ctx: RunContext, phases: list[Phase], run_id: str) -> str:
    s = ctx.data.summary
    lines = [
        "kronos_exp " + " -> ".join(p.name for p in phases),
        f"  data     {s.get('n_series', '?')} series from {len(ctx.data_fingerprint['files'])} file(s); "
        f"windows train/val/test {len(ctx.data.train)}/{len(ctx.data.val)}/{len(ctx.data.test)} "
        f"(lookback {cfg.data.lookback_window} + predict {cfg.data.predict_window})",
        f"  device   {ctx.device} ({ctx.precision})" + (
            f" x {ctx.world.world_size} processes" if ctx.world.distributed else ""),
        f"  mlflow   {ctx.tracker.tracking_uri}  experiment '{ctx.tracker.experiment_name}'  run {run_id}",
        f"  outputs  {ctx.output_dir}",
    ]
    return "\n".join(lines)


def _closing(ctx: RunContext, results: dict[str, PhaseResult], objective: float, seconds: float) -> str:
    lines = [f"done in {seconds:.1f}s; objective {objective:.5f}"]
    for name, r in results.items():
        how = f"reused {r.version.label}" if r.skipped else (
            f"trained, registered {r.version.label}" if r.version else "trained")
        lines.append(f"  {name:<10} best val_loss {r.val_loss:.5f}  {how}")
        lines.append(f"  {'':<10} checkpoint {r.checkpoint_dir}")
    lines.append(f"  open the MLflow UI: {ctx.tracker.ui_command()}")
    return "\n".join(lines)


def run(cfg: DictConfig, output_dir: Path) -> float:
    """Run every configured phase; returns the objective (a validation loss) for sweepers.
    Under torchrun every rank runs this; rank 0 alone tracks, checkpoints and registers."""
    world = World.from_env()
    device = distributed.device_for(world, resolve_device(cfg.device))
    distributed.start(world, device, cfg.dist_backend)
    try:
        return _run(cfg, output_dir, world, device)
    except KeyboardInterrupt as stop:
        if world.is_main:
            raise
        raise SystemExit(exit_code(stop)) from None  # stopped with rank 0, which says so once
    except USER_ERRORS:
        if world.is_main:
            raise
        # Every rank meets a bad setting alike: rank 0 alone says so and ends the runs FAILED;
        # torchrun stops this process when rank 0 exits.
        time.sleep(30)
        raise SystemExit(1) from None
    except Exception:
        peer = distributed.failed_peer() if world.distributed else None
        if peer is not None and peer != world.rank:
            # A broken collective because a peer died: that peer prints the error worth reading.
            raise SystemExit(f"error: process {peer} of this torchrun failed (its error is printed above); "
                             "the MLflow runs are marked FAILED" if world.is_main else 1) from None
        if world.distributed:
            distributed.report_failure(world)
        raise
    finally:
        distributed.stop()


def _run(cfg: DictConfig, output_dir: Path, world: World, device: torch.device) -> float:
    started = time.perf_counter()
    job = JobInfo.current()
    # skip_existing=null (the default): reuse registered phases in sweeps, retrain in single runs.
    skip_existing = job.multirun if cfg.skip_existing is None else bool(cfg.skip_existing)
    if job.parallel_jobs > 1:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.parallel_jobs))
    if not world.is_main:  # one voice: the other ranks log warnings and errors only
        logging.getLogger().setLevel(logging.WARNING)
    precision = resolve_precision(cfg.precision, device)
    phases = build_phases(cfg)
    check_objective(cfg, phases)
    check_settings(cfg, [p.name for p in phases])
    data = build_datasets(cfg.data)
    data_fingerprint = {"files": [file_digest(p) for p in resolve_paths(cfg.data)],
                        "config": OmegaConf.to_container(cfg.data, resolve=True)}
    # Every rank writes where rank 0's Hydra folder is, and takes rank 0's reuse decisions.
    output_dir, skip_existing = world.share((output_dir, skip_existing))
    tracker = (Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, cfg.mlflow.http_timeout_s,
                       cfg.mlflow.http_max_retries, cfg.mlflow.offline_wait_s) if world.is_main else None)
    if tracker:
        tracker.end_dead_runs()
    ctx = RunContext(cfg=cfg, data=data, data_fingerprint=data_fingerprint, device=device, tracker=tracker,
                     registry=Registry(tracker.client) if tracker else None, output_dir=output_dir,
                     skip_existing=skip_existing, resume=cfg.resume, world=world, precision=precision)
    if not world.is_main:
        for phase in phases:
            ctx.results[phase.name] = phase.run(ctx)
        return objective_value(cfg, {f"{name}_val_loss": r.val_loss for name, r in ctx.results.items()})
    try:
        with sigterm_stops(), tracker.job_run(cfg, output_dir, tags=job.tags()) as job_run:
            log.info("\n%s", _banner(cfg, ctx, phases, job_run.info.run_id))
            mlflow.log_dict(data.summary, "data_summary.json")
            for phase in phases:
                ctx.results[phase.name] = phase.run(ctx)
            val_losses = {f"{name}_val_loss": r.val_loss for name, r in ctx.results.items()}
            objective = objective_value(cfg, val_losses)
            mlflow.log_metrics({**val_losses, "objective": objective})
            mlflow.set_tag("phases", ",".join(ctx.results))
            log.info("\n%s", _closing(ctx, ctx.results, objective, time.perf_counter() - started))
    except Exception as err:
        lost = tracker.lost_server_message(output_dir)
        if lost:
            raise TrackingUnavailable(lost) from err
        raise
    return objective
