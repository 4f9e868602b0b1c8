"""The Hydra callbacks named in conf/config.yaml (``hydra.callbacks``): thin hooks into Hydra's run
and multirun lifecycle; the MLflow work is in kronos_exp/tracking/sweep.py."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import collector
from .errors import UserError, error_line
from .hydra_job import mlflow_settings, stored_study, sweep_directions, task_overrides
from .redact import mask_logs_and_warnings, mask_passwords
from .tracking.sweep import SweepRun


def check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` and a file in it, or stop with one line naming it and the setting to change."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise SystemExit(error_line(f"cannot write the run folder {folder} ({err.strerror}); run from a folder you "
                                    f"can write, or set {key}=<a writable folder>")) from None


class RunFolderCheck(Callback):
    """Checks the run (or sweep) folder can be written before Hydra creates it: Hydra's own failure
    there is a traceback, printed before any of kronos_exp's code runs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def check_slurm_time_limit(launcher: Any) -> None:
    """Refuse a SLURM launcher whose warning comes at or before its job's start
    (``timeout_min * 60 <= signal_delay_s``): every job would be stopped as it starts and requeued,
    each requeue waiting minutes, without ever training."""
    delay, minutes = launcher.get("signal_delay_s"), launcher.get("timeout_min")
    if not isinstance(delay, (int, float)) or not isinstance(minutes, (int, float)) or minutes * 60 > delay:
        return
    raise SystemExit(error_line(
        f"hydra.launcher.timeout_min={minutes} ({minutes * 60:g} s) is not longer than hydra.launcher.signal_delay_s="
        f"{delay}, SLURM's warning before the time limit: every job would be stopped and requeued as it starts; "
        f"set timeout_min above {delay / 60:g} or signal_delay_s below {minutes * 60:g}"))


class MlflowSweepCallback(Callback):
    """The sweep's parent run in MLflow, and the job table when the sweep ends."""

    def __init__(self) -> None:
        self.sweep: SweepRun | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before anything is submitted or recorded (a config composed without Hydra has no launcher).
        check_slurm_time_limit(OmegaConf.select(config, "hydra.launcher") or {})
        try:  # an objective with no better direction is refused before any job runs
            directions = sweep_directions(config)
        except UserError as err:
            raise SystemExit(error_line(str(err))) from None
        self.sweep = SweepRun.start(mlflow_settings(config), directions, task_overrides(config), stored_study(config))
        collector.imports_done()  # the sweeping process runs no job itself under parallel launchers

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is not None:
            self.sweep.end()


def mask_file(path: Path) -> None:
    """Rewrite ``path`` with the passwords of its URLs masked; by a rename, as the parallel jobs of
    a sweep rewrite its multirun.yaml at once."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    masked = mask_passwords(text)
    if masked != text:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            tmp.write(masked)
        os.replace(tmp.name, path)


class MaskPasswords(Callback):
    """URL passwords (``hydra.sweeper.storage``, ``mlflow.tracking_uri``; kronos_exp/redact.py)
    masked in every log line of the sweeping process and of each job, and in the config files Hydra
    saved before the job starts: the job's ``.hydra/*.yaml``, kept with its outputs and uploaded to
    its MLflow run, and its sweep's ``multirun.yaml``. The job itself runs with the config in memory."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mask_logs_and_warnings()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        mask_logs_and_warnings()  # (a job of joblib or submitit runs in a process of its own)
        saved = [] if config.hydra.output_subdir is None else \
            sorted((Path(config.hydra.runtime.output_dir) / config.hydra.output_subdir).glob("*.yaml"))
        if config.hydra.mode == RunMode.MULTIRUN:
            saved.append(Path(config.hydra.sweep.dir) / "multirun.yaml")
        for path in saved:
            mask_file(path)
