"""What Hydra knows about this job and its sweep, read here (Hydra's glue, beside __main__ and
hydra_callbacks) and handed to the rest of the package as plain values: the job's place in a
sweep (tracking.sweep.JobInfo), how many jobs its launcher runs at once, the sweeper's
directions, the overrides (and their values as typed) and the typed ``mlflow`` section. Below the pipeline nothing imports
Hydra or OmegaConf."""
from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .objective import objective_directions
from .schemas import MlflowConfig
from .tracking.sweep import SWEEP_ID_ENV, JobInfo

DIRECTIONS = ("maximize", "minimize")


def current_job() -> JobInfo:
    """How Hydra launched this job: a single run, or job ``num`` of a sweep."""
    if not HydraConfig.initialized():
        return JobInfo(False, None, [], None)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobInfo(multirun, hc.job.num if multirun else None, list(hc.overrides.task),
                   os.environ.get(SWEEP_ID_ENV) if multirun else None,
                   parallel_jobs(hc.launcher) if multirun else 1)


def given_values(overrides: list[str]) -> dict[str, str]:
    """Each override's value as it was typed (``predictor.lr=5``: ``5``), by key; what the run's
    params show where the typed config would show another spelling of the same number (``5.0``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.input_line.split("=", 1)[1].strip() for o in parsed
            if not o.is_delete() and o.input_line and "=" in o.input_line}


def parallel_jobs(launcher: DictConfig) -> int:
    """How many jobs the launcher runs at once on this machine: joblib's ``n_jobs`` (-1: one per
    core); submitit_local starts every job at once, each with ``cpus_per_task`` when given, else one
    core; a SLURM job has its own CPUs (one)."""
    cores = os.cpu_count() or 1
    if str(launcher.get("_target_", "")).endswith("submitit_launcher.LocalLauncher"):
        return max(1, cores // int(launcher.get("cpus_per_task") or 1))
    n_jobs = int(launcher.get("n_jobs", 1) or 1)
    return n_jobs if n_jobs > 0 else cores


def sweep_directions(config: DictConfig) -> list[str]:
    """``maximize`` or ``minimize`` for each objective: the sweeper's own directions where it has
    them (Optuna's ``hydra.sweeper.direction``, one or a list), else those the metrics improve in."""
    given = OmegaConf.select(config, "hydra.sweeper.direction")
    listed = [given] if isinstance(given, str) else list(given) if OmegaConf.is_list(given) else []
    return listed if listed and set(listed) <= set(DIRECTIONS) else objective_directions(config)


def stored_study(config: DictConfig) -> str | None:
    """The name of the stored Optuna study a sweep by kronos_exp's sweeper searches in (one that
    outlives the sweep: its storage is not null, and its name is given), else None."""
    sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
    if "KronosOptunaSweeper" not in str(sweeper.get("_target_", "")) or sweeper.get("storage") is None:
        return None
    return sweeper.get("study_name") or None


def task_overrides(config: DictConfig) -> list[str]:
    """The overrides the command line gave (a sweep's: those every job shares)."""
    return list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])


def mlflow_settings(config: DictConfig) -> MlflowConfig:
    """The ``mlflow`` section of a composed config, typed: what tracking is built from."""
    return MlflowConfig(**OmegaConf.to_container(config.mlflow, resolve=True))
