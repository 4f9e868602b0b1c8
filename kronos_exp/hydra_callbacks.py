"""The Hydra callbacks named in conf/config.yaml (``hydra.callbacks``): thin hooks into Hydra's run
and multirun lifecycle; the MLflow work is in kronos_exp/tracking/sweep.py."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from . import collector
from .errors import UserError, error_line
from .hydra_job import mlflow_settings, sweep_directions, task_overrides
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


class MlflowSweepCallback(Callback):
    """The sweep's parent run in MLflow, and the job table when the sweep ends."""

    def __init__(self) -> None:
        self.sweep: SweepRun | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # an objective with no better direction is refused before any job runs
            directions = sweep_directions(config)
        except UserError as err:
            raise SystemExit(error_line(str(err))) from None
        self.sweep = SweepRun.start(mlflow_settings(config), directions, task_overrides(config))
        collector.imports_done()  # the sweeping process runs no job itself under parallel launchers

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is not None:
            self.sweep.end()
