"""One invocation: resolve the config once, load the data, run the configured phases in order
inside one MLflow run, report. Each step is built with its own section of the typed config
(kronos_exp.schemas); nothing below this module reads the composed ``DictConfig``."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import TRAINING_PHASES, one_error, resolve
from .data import build_datasets, default_cache_dir
from .errors import ConfigError, TrialPruned, TrialTaken, UserError
from .hydra_job import current_job, given_values
from .forecasting.requests import Limits
from .objective import objective_metrics, refusal_of_test_split, several_objectives
from .phases import Phase
from .runner import MeasuringStep, RunContext, ranks_end_together, run_step, share_decisions
from .schemas import RunConfig
from .search.trial import TrialLink
from .tracking import Tracker, TrackingUnavailable
from .tracking.fingerprint import data_fingerprint as fingerprint_data
from .tracking.lifecycle import PhaseResult, PhaseRunFactory
from .tracking.runs import PARENT_RUN_ENV
from .tracking.sweep import SWEEP_ID_ENV, JobInfo
from .train import distributed, resolve_device, resolve_precision
from .train.distributed import World
from .train.interrupt import sigterm_stops
from .train.settings import LoopOptions
from .train.threads import resolve_threads
from .window import WindowSpec

log = logging.getLogger(__name__)

# On a search job's run, per epoch: the validation loss its trial reported (what the pruner judged).
TRIAL_LOSS_METRIC = "trial_val_loss"


def build_steps(cfg: DictConfig, run: RunConfig) -> list[Phase | MeasuringStep]:
    """The steps ``phases`` names, each built from its ``_target_`` with its own section of the
    run's settings (``settings=``): a training phase its tokenizer/predictor section, the eval
    step its eval section and the published pair it compares with."""
    if not run.phases:
        raise ConfigError("no phases configured; use phases=all, phases=both, phases=tokenizer, phases=predictor "
                          "or phases=eval")
    steps = []
    for key in run.phases:
        arguments = {"settings": getattr(run, key)} if hasattr(run, key) else {}
        if key == "eval":
            arguments["published"] = (run.predictor.pretrained, run.tokenizer.pretrained)
        step = instantiate(cfg.phases[key], _partial_=True)(**arguments)  # the sections as they are, typed
        if not isinstance(step, Phase) and not callable(getattr(step, "measure", None)):
            raise ConfigError(f"phases.{key}._target_ built a {type(step).__name__}, not a kronos_exp Phase "
                              "(kronos_exp.phases.Phase) or a measuring step (with a measure(ctx) method)")
        steps.append(step)
    return steps


def objective_problems(run: RunConfig, steps: list) -> list[UserError]:
    """``objective`` must name metrics a step of this run reports, checked before any training."""
    if run.objective is None:
        return []
    names = [name for step in steps for name in step.reported_metrics()]
    problems: list[UserError] = []
    for objective in objective_metrics(run):
        renamed = f"eval_val_{objective[len('eval_'):]}"
        refusal = refusal_of_test_split(objective)
        if refusal is not None:
            problems.append(refusal)
        elif objective not in names and renamed in names:
            problems.append(ConfigError(
                f"objective={objective}: eval metrics are named by their split now; the validation split's is "
                f"objective={renamed} (test metrics report and never choose)"))
        elif objective not in names:
            choices = ", ".join(n for n in names if not n.startswith("eval_test_"))
            problems.append(ConfigError(f"objective={objective} but this run reports only {choices}; use one of "
                                        "those, or objective=null for the last phase's own"))
    return problems


def objective_value(run: RunConfig, reported: dict[str, float]) -> float | list[float]:
    """What sweepers optimise (in the directions kronos_exp.objective gives): the metric
    ``objective`` names, else the last phase's own; a list of values for a list of metrics."""
    values = [reported[name] for name in objective_metrics(run)]
    return values if several_objectives(run) else values[0]


def objective_metrics_logged(objective: float | list[float]) -> dict[str, float]:
    """The job run's ``objective`` metric (the first of several), and ``objective_<i>`` for each of several."""
    if not isinstance(objective, list):
        return {"objective": objective}
    return {"objective": objective[0], **{f"objective_{i}": v for i, v in enumerate(objective)}}


def reported_phase(run: RunConfig, phases: list) -> str | None:
    """The training phase whose epochs a search's pruner watches: the one whose val_loss is the
    objective, else the last one that trains (the eval step trains nothing)."""
    trained = [p.name for p in phases if isinstance(p, Phase)]
    named = [m[:-len("_val_loss")] for m in objective_metrics(run) if m.endswith("_val_loss")]
    return next((n for n in named if n in trained), trained[-1] if trained else None)


def _banner(ctx: RunContext, phases: list, run_id: str, threads: tuple[int, str]) -> str:
    s = ctx.data.summary
    lines = [
        "kronos_exp " + " -> ".join(p.name for p in phases),
        f"  data     {s.get('n_series', '?')} series from {len(ctx.data_fingerprint['files'])} file(s); "
        f"windows train/val/test {len(ctx.data.train)}/{len(ctx.data.val)}/{len(ctx.data.test)} "
        f"(lookback {ctx.window.lookback} + predict {ctx.window.horizon})",
        *(f"  {split:<8} {dates}" for split, dates in s.get("split_dates", {}).items()),
        f"  device   {ctx.device} ({ctx.precision})" + (
            f" x {ctx.world.world_size} processes" if ctx.world.distributed else ""),
        f"  threads  {threads[0]} ({threads[1]})",
        f"  mlflow   {ctx.tracker.shown_uri}  experiment '{ctx.tracker.experiment_name}'  run {run_id}",
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
        if "stopped_epoch" in r.tags:
            section = ctx.sections[name]
            lines.append(f"  {'':<10} stopped early after epoch {int(r.tags['stopped_epoch']) + 1}/{section.epochs} "
                         f"(patience {section.early_stopping.patience})")
        lines.append(f"  {'':<10} checkpoint {r.checkpoint_dir}")
    lines.append(f"  open the MLflow UI: {ctx.tracker.ui_command()}")
    return "\n".join(lines)


def run(cfg: DictConfig, output_dir: Path) -> float | list[float]:
    """Run every configured phase; returns the objective (a validation loss or an eval metric; a
    list of them for several) for sweepers. A trial its search prunes raises ``TrialPruned``.
    Under torchrun every rank runs this; rank 0 alone tracks, checkpoints and registers."""
    world = World.from_env()
    with ranks_end_together(world):
        settings = resolve(cfg)  # every setting checked once, before any work
        steps = build_steps(cfg, settings)
        error = one_error(objective_problems(settings, steps))
        if error is not None:
            raise error
        device = distributed.device_for(world, resolve_device(settings.device))
        distributed.start(world, device, settings.dist_backend)
        # Rank 0 takes SIGTERM as a stop once its runs are open (_tracked); the others from the start.
        with contextlib.nullcontext() if world.is_main else sigterm_stops():
            return _run(settings, steps, output_dir, world, device)


def _run(settings: RunConfig, steps: list, output_dir: Path, world: World, device: torch.device) -> float | list[float]:
    started = time.perf_counter()
    job = current_job()
    job.label_log_lines()
    if not job.multirun:  # a single run is never a sweep's job, whatever an earlier sweep left set
        for name in (PARENT_RUN_ENV, SWEEP_ID_ENV):
            os.environ.pop(name, None)
    # skip_existing=null (the default): reuse registered phases in sweeps, retrain in single runs.
    skip_existing = job.multirun if settings.skip_existing is None else bool(settings.skip_existing)
    if not world.is_main:  # one voice: the other ranks log warnings and errors only
        logging.getLogger().setLevel(logging.WARNING)
    # Before any work: share the cores instead of oversubscribing them, on a busy machine too.
    threads = resolve_threads(settings.threads, parallel_jobs=job.parallel_jobs, distributed=world.distributed)
    if torch.get_num_threads() != threads[0]:
        torch.set_num_threads(threads[0])
    ctx = _prepare(settings, output_dir, world, device)
    trial = TrialLink.current() if job.multirun else None
    watched = reported_phase(settings, steps)
    if trial is not None and watched is not None:
        ctx.on_epoch_end = trial.epoch_hook(world, watched)
    skip_existing = share_decisions(ctx, skip_existing)
    if not world.is_main:
        for step in steps:
            ctx.results[step.name] = run_step(step, ctx)
        reported = {k: v for step in steps for k, v in step.report(ctx.results[step.name]).items()}
        return objective_value(settings, reported)
    tracker = Tracker.from_settings(settings.mlflow)
    if world.distributed:
        tracker.failure_elsewhere = lambda: distributed.peer_failure(world)
    tracker.end_dead_runs()
    ctx.runs = PhaseRunFactory(tracker, ctx.output_dir, skip_existing=skip_existing, resume=settings.resume,
                               heartbeat_s=settings.mlflow.heartbeat_s, version_tags=trial.tags() if trial else None,
                               given=given_values(job.overrides))
    try:
        return _tracked(settings, ctx, steps, job, started, trial, threads)
    except Exception as err:
        lost = tracker.lost_server_message(ctx.output_dir)
        if lost:
            raise TrackingUnavailable(lost) from err
        raise


def _prepare(settings: RunConfig, output_dir: Path, world: World, device: torch.device) -> RunContext:
    """Load the data and hand each part of the run what it needs of the settings."""
    data = build_datasets(settings.data, cache_dir=default_cache_dir())
    d = settings.data
    window = WindowSpec(lookback=d.lookback_window, horizon=d.predict_window, clip=d.clip,
                        max_context=settings.predictor.max_context)
    return RunContext(
        data=data, data_fingerprint=fingerprint_data(data.file_digests, dataclasses.asdict(d)), window=window,
        sections={name: getattr(settings, name) for name in TRAINING_PHASES},
        model_names={name: getattr(settings.mlflow, f"{name}_model_name") for name in TRAINING_PHASES},
        device=device, output_dir=output_dir, precision=resolve_precision(settings.precision, device), world=world,
        loop=LoopOptions(settings.num_workers, settings.compile, settings.checkpoint_every_steps),
        limits=Limits.from_mapping(dataclasses.asdict(settings.serving)))


def _tracked(settings: RunConfig, ctx: RunContext, steps: list, job: JobInfo, started: float,
             trial: TrialLink | None, threads: tuple[int, str]) -> float | list[float]:
    """Rank 0: the phases in order inside the job run (linked to its Optuna trial in a search),
    and the objective for sweepers."""
    tags = {**job.tags(), **(trial.tags() if trial else {}), "threads": str(threads[0])}
    with sigterm_stops(), ctx.tracker.job_run(dataclasses.asdict(settings), ctx.output_dir, tags=tags,
                                              given=ctx.runs.given) as job_run:
        log.info("\n%s", _banner(ctx, steps, job_run.info.run_id, threads))
        if trial is not None:
            trial.link(job_run.info.run_id)
            trial.on_report = lambda epoch, loss: ctx.tracker.metrics.put(job_run.info.run_id,
                                                                          {TRIAL_LOSS_METRIC: loss}, epoch)
        ctx.tracker.record(documents={"data_summary.json": ctx.data.summary})
        reported: dict[str, float] = {}
        for step in steps:
            try:
                ctx.results[step.name] = run_step(step, ctx)
            except TrialPruned as stop:
                ctx.tracker.record(tags={"taken_over" if isinstance(stop, TrialTaken) else "pruned": "true"})
                raise
            reported.update(step.report(ctx.results[step.name]))
            ctx.tracker.record(tags={f"{step.name}_{k}": v for k, v in ctx.results[step.name].tags.items()})
        used = [r.version for r in ctx.results.values() if r.version is not None]
        if trial is not None and used:  # the version this trial stands for: the last phase's, trained or reused
            trial.name_version(used[-1].uri)
        objective = objective_value(settings, reported)
        seconds = time.perf_counter() - started
        # duration_s: what the sweep table shows, the same as "done in"
        ctx.tracker.record(metrics={**reported, **objective_metrics_logged(objective), "duration_s": seconds},
                           tags={"phases": ",".join(ctx.results)})
        log.info("\n%s", _closing(ctx, ctx.results, objective, seconds))
    return objective
