"""One invocation: load the data, run the configured phases in order inside one MLflow run, report."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import mlflow
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import check_known_keys, check_settings, objective_metrics
from .data import build_datasets, default_cache_dir
from .errors import ConfigError, TrialPruned, UserError
from .model.checkpoint import CONFIG_NAME, CheckpointError, resolve_checkpoint_dir
from .phases import Phase
from .runner import MeasuringStep, RunContext, run_step
from .search.trial import TrialLink
from .tracking import Tracker, TrackingUnavailable
from .tracking.fingerprint import data_fingerprint as fingerprint_data
from .tracking.lifecycle import PhaseResult, PhaseRuns
from .tracking.runs import PARENT_RUN_ENV
from .tracking.stale import runs_ended
from .tracking.sweep import SWEEP_ID_ENV, JobInfo
from .train import distributed, resolve_device, resolve_precision
from .train.distributed import World
from .train.interrupt import exit_code, sigterm_stops
from .train.threads import resolve_threads

log = logging.getLogger(__name__)


def build_phases(cfg: DictConfig) -> list[Phase | MeasuringStep]:
    if not cfg.phases:
        raise ConfigError("no phases configured; use phases=all, phases=both, phases=tokenizer, phases=predictor "
                          "or phases=eval")
    phases = [instantiate(spec) for spec in cfg.phases.values()]
    for key, phase in zip(cfg.phases, phases):
        if not isinstance(phase, Phase) and not callable(getattr(phase, "measure", None)):
            raise ConfigError(f"phases.{key}._target_ built a {type(phase).__name__}, not a kronos_exp Phase "
                              "(kronos_exp.phases.Phase) or a measuring step (with a measure(ctx) method)")
    return phases


def use_pretrained_architectures(cfg: DictConfig) -> None:
    """A pretrained checkpoint's config.json decides its phase's architecture: write it into
    ``<phase>.arch`` so the params and resolved config in MLflow show what actually trains."""
    for name in ("tokenizer", "predictor"):
        pretrained = cfg[name].get("pretrained")
        if not pretrained or (name == "predictor" and "predictor" not in cfg.phases):
            continue  # (the predictor phase may also read the tokenizer's)
        folder = resolve_checkpoint_dir(pretrained)
        config = json.loads((folder / CONFIG_NAME).read_text())
        try:
            for key, value in config.items():
                cfg[name].arch[key] = value
        except OmegaConfBaseException as err:
            raise CheckpointError(f"{folder / CONFIG_NAME} is not a Kronos {name} config "
                                  f"({str(err).splitlines()[0]})") from None


def check_objective(cfg: DictConfig, phases: list) -> None:
    """``objective`` must name metrics a phase of this run reports, checked before any training."""
    if cfg.objective is None:
        return
    names = [name for p in phases for name in p.reported_metrics(cfg)]
    for objective in objective_metrics(cfg):
        if objective.startswith("eval_test_"):
            raise ConfigError(f"objective={objective} is measured on the test split, which reports and never "
                              f"chooses (a search that chose by it would report an optimistic test error); use the "
                              f"validation split's objective={objective.replace('eval_test_', 'eval_val_', 1)}")
        renamed = f"eval_val_{objective[len('eval_'):]}"
        if objective not in names and renamed in names:
            raise ConfigError(f"objective={objective}: eval metrics are named by their split now; the validation "
                              f"split's is objective={renamed} (test metrics report and never choose)")
        if objective not in names:
            choices = ", ".join(n for n in names if not n.startswith("eval_test_"))
            raise ConfigError(f"objective={objective} but this run reports only {choices}; use one of those, or "
                              "objective=null for the last phase's own")


def objective_value(cfg: DictConfig, reported: dict[str, float]) -> float | list[float]:
    """What sweepers optimise (in the directions config.objective_directions gives): the metric
    ``cfg.objective`` names, else the last phase's own; a list of values for a list of metrics."""
    values = [reported[name] for name in objective_metrics(cfg)]
    return values[0] if OmegaConf.select(cfg, "objective") is None or isinstance(cfg.objective, str) else values


def objective_metrics_logged(objective: float | list[float]) -> dict[str, float]:
    """The job run's ``objective`` metric (the first of several), and ``objective_<i>`` for each of several."""
    if not isinstance(objective, list):
        return {"objective": objective}
    return {"objective": objective[0], **{f"objective_{i}": v for i, v in enumerate(objective)}}


def reported_phase(cfg: DictConfig, phases: list) -> str | None:
    """The training phase whose epochs a search's pruner watches: the one whose val_loss is the
    objective, else the last one that trains (the eval step trains nothing)."""
    trained = [p.name for p in phases if isinstance(p, Phase)]
    named = [m[:-len("_val_loss")] for m in objective_metrics(cfg) if m.endswith("_val_loss")]
    return next((n for n in named if n in trained), trained[-1] if trained else None)


def _banner(cfg: DictConfig, ctx: RunContext, phases: list, run_id: str, threads: tuple[int, str]) -> str:
    s = ctx.data.summary
    lines = [
        "kronos_exp " + " -> ".join(p.name for p in phases),
        f"  data     {s.get('n_series', '?')} series from {len(ctx.data_fingerprint['files'])} file(s); "
        f"windows train/val/test {len(ctx.data.train)}/{len(ctx.data.val)}/{len(ctx.data.test)} "
        f"(lookback {cfg.data.lookback_window} + predict {cfg.data.predict_window})",
        f"  device   {ctx.device} ({ctx.precision})" + (
            f" x {ctx.world.world_size} processes" if ctx.world.distributed else ""),
        f"  threads  {threads[0]} ({threads[1]})",
        f"  mlflow   {ctx.tracker.tracking_uri}  experiment '{ctx.tracker.experiment_name}'  run {run_id}",
        f"  outputs  {ctx.output_dir}",
    ]
    return "\n".join(lines)


def _closing(ctx: RunContext, results: dict[str, PhaseResult], objective: float | list[float], seconds: float) -> str:
    shown = ", ".join(f"{v:.5f}" for v in (objective if isinstance(objective, list) else [objective]))
    lines = [f"done in {seconds:.1f}s; objective {shown}"]
    for name, r in results.items():
        how = f"reused {r.version.label}" if r.skipped else (
            f"trained, registered {r.version.label}" if r.version else "trained")
        if r.summary:  # a step that measures rather than trains (evaluation)
            lines += [f"  {name if i == 0 else '':<10} {line}" for i, line in enumerate(r.summary)]
            continue
        lines.append(f"  {name:<10} best val_loss {r.val_loss:.5f}  {how}")
        lines.append(f"  {'':<10} checkpoint {r.checkpoint_dir}")
    lines.append(f"  open the MLflow UI: {ctx.tracker.ui_command()}")
    return "\n".join(lines)


def run(cfg: DictConfig, output_dir: Path) -> float | list[float]:
    """Run every configured phase; returns the objective (a validation loss or an eval metric; a
    list of them for several) for sweepers. A trial its search prunes raises ``TrialPruned``.
    Under torchrun every rank runs this; rank 0 alone tracks, checkpoints and registers."""
    world = World.from_env()
    device = distributed.device_for(world, resolve_device(cfg.device))
    distributed.start(world, device, cfg.dist_backend)
    try:
        # Rank 0 takes SIGTERM as a stop once its runs are open (_tracked); the others from the start.
        with contextlib.nullcontext() if world.is_main else sigterm_stops():
            return _run(cfg, output_dir, world, device)
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
        # Every rank meets a bad setting alike: rank 0 alone says so and ends the runs FAILED;
        # torchrun stops this process when rank 0 exits.
        time.sleep(30)
        raise SystemExit(1) from None
    except Exception:
        _raise_if_a_peer_failed(world)  # a broken collective because a peer died: the peer is the news
        if world.distributed:
            distributed.report_failure(world)
        raise
    finally:
        distributed.stop()


def _raise_if_a_peer_failed(world: World) -> None:
    """Stop with the line that names the process whose failure stopped this one (rank 0 says it)."""
    failure = distributed.peer_failure(world) if world.distributed else None
    if failure is not None:
        raise SystemExit(f"error: {failure}; {runs_ended('FAILED')}" if world.is_main else 1) from None


def _run(cfg: DictConfig, output_dir: Path, world: World, device: torch.device) -> float | list[float]:
    started = time.perf_counter()
    job = JobInfo.current()
    job.label_log_lines()
    if not job.multirun:  # a single run is never a sweep's job, whatever an earlier sweep left set
        for name in (PARENT_RUN_ENV, SWEEP_ID_ENV):
            os.environ.pop(name, None)
    # skip_existing=null (the default): reuse registered phases in sweeps, retrain in single runs.
    skip_existing = job.multirun if cfg.skip_existing is None else bool(cfg.skip_existing)
    if not world.is_main:  # one voice: the other ranks log warnings and errors only
        logging.getLogger().setLevel(logging.WARNING)
    phases, ctx = _prepare(cfg, output_dir, world, device)  # (checks `threads` among the settings)
    threads = resolve_threads(cfg.threads, parallel_jobs=job.parallel_jobs, distributed=world.distributed)
    if torch.get_num_threads() != threads[0]:  # share the cores instead of oversubscribing them
        torch.set_num_threads(threads[0])
    trial = TrialLink.current() if job.multirun else None
    watched = reported_phase(cfg, phases)
    if trial is not None and watched is not None:
        ctx.on_epoch_end = trial.epoch_hook(world, watched)
    # Every rank writes where rank 0's Hydra folder is, and takes rank 0's reuse decisions.
    ctx.output_dir, skip_existing = world.share((output_dir, skip_existing))
    if not world.is_main:
        for phase in phases:
            ctx.results[phase.name] = run_step(phase, ctx)
        reported = {k: v for p in phases for k, v in p.report(ctx.results[p.name]).items()}
        return objective_value(cfg, reported)
    tracker = Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, cfg.mlflow.http_timeout_s,
                      cfg.mlflow.http_max_retries, cfg.mlflow.offline_wait_s)
    if world.distributed:
        tracker.failure_elsewhere = lambda: distributed.peer_failure(world)
    tracker.end_dead_runs()
    ctx.runs = PhaseRuns(tracker, ctx.output_dir, skip_existing=skip_existing, resume=cfg.resume,
                         heartbeat_s=cfg.mlflow.heartbeat_s)
    try:
        return _tracked(cfg, ctx, phases, job, started, trial, threads)
    except Exception as err:
        lost = tracker.lost_server_message(ctx.output_dir)
        if lost:
            raise TrackingUnavailable(lost) from err
        raise


def _prepare(cfg: DictConfig, output_dir: Path, world: World, device: torch.device) -> tuple[list, RunContext]:
    """Check every setting, then load the data: a bad value fails before any work."""
    check_known_keys(cfg)
    use_pretrained_architectures(cfg)
    precision = resolve_precision(cfg.precision, device)
    phases = build_phases(cfg)
    for phase in phases:
        phase.check(cfg)
    check_objective(cfg, phases)
    check_settings(cfg, [p.name for p in phases])
    data = build_datasets(cfg.data, cache_dir=default_cache_dir())
    data_fingerprint = fingerprint_data(data.file_digests, OmegaConf.to_container(cfg.data, resolve=True))
    return phases, RunContext(cfg=cfg, data=data, data_fingerprint=data_fingerprint, device=device,
                              output_dir=output_dir, precision=precision, world=world)


def _tracked(cfg: DictConfig, ctx: RunContext, phases: list, job: JobInfo, started: float,
             trial: TrialLink | None, threads: tuple[int, str]) -> float | list[float]:
    """Rank 0: the phases in order inside the job run (linked to its Optuna trial in a search),
    and the objective for sweepers."""
    tags = {**job.tags(), **(trial.tags() if trial else {}), "threads": str(threads[0])}
    with sigterm_stops(), ctx.tracker.job_run(cfg, ctx.output_dir, tags=tags) as job_run:
        log.info("\n%s", _banner(cfg, ctx, phases, job_run.info.run_id, threads))
        if trial is not None:
            trial.link(job_run.info.run_id)
        mlflow.log_dict(ctx.data.summary, "data_summary.json")
        reported: dict[str, float] = {}
        for phase in phases:
            try:
                ctx.results[phase.name] = run_step(phase, ctx)
            except TrialPruned:
                mlflow.set_tag("pruned", "true")
                raise
            reported.update(phase.report(ctx.results[phase.name]))
            mlflow.set_tags({f"{phase.name}_{k}": v for k, v in ctx.results[phase.name].tags.items()})
        objective = objective_value(cfg, reported)
        mlflow.log_metrics({**reported, **objective_metrics_logged(objective)})
        mlflow.set_tag("phases", ",".join(ctx.results))
        seconds = time.perf_counter() - started
        mlflow.log_metric("duration_s", seconds)  # what the sweep table shows, the same as "done in"
        log.info("\n%s", _closing(ctx, ctx.results, objective, seconds))
    return objective
