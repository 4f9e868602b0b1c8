"""MLflow runs: one per invocation (the job), one nested run per phase.

Tracking is told what happened; it never decides training. Every run it opens is closed with
FINISHED, FAILED (an exception) or KILLED (Ctrl-C / SIGTERM), never left RUNNING.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from .stale import PID_TAG, mark_dead_runs_failed, process_tags

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "KRONOS_EXP_PARENT_RUN_ID"  # set by a sweep to nest its jobs under one run


def default_tracking_uri(root: Path | None = None) -> str:
    """An embedded SQLite store under ./outputs, so a first run needs no server."""
    return f"sqlite:///{((root or Path.cwd()) / 'outputs' / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Experiment id for ``name``; local stores keep artifacts beside the database under outputs/."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(name).experiment_id


def flatten(cfg: Any, prefix: str = "") -> dict[str, str]:
    """``{"tokenizer.arch.d_model": "32", ...}`` for MLflow params."""
    out: dict[str, str] = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(cfg, list):
        out[prefix[:-1]] = ",".join(map(str, cfg))
    else:
        out[prefix[:-1]] = str(cfg)
    return out


@contextlib.contextmanager
def closing_run(run: mlflow.ActiveRun) -> Iterator[mlflow.ActiveRun]:
    """End ``run`` as FINISHED, KILLED (interrupt) or FAILED (exception)."""
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as err:
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


class Tracker:
    """The MLflow side of one invocation."""

    def __init__(self, tracking_uri: str | None, experiment_name: str):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        store_lock = contextlib.nullcontext()
        if self.tracking_uri.startswith("sqlite:///"):
            database = Path(self.tracking_uri[len("sqlite:///"):])
            database.parent.mkdir(parents=True, exist_ok=True)
            # MLflow creates and migrates the schema when it first opens a database; processes
            # doing that at once on a new store collide, so they take turns (only this first open).
            store_lock = FileLock(f"{database}.init.lock")
        mlflow.set_tracking_uri(self.tracking_uri)
        with store_lock:
            self.client = MlflowClient(self.tracking_uri)  # opens (and creates) the database
            self.experiment_id = ensure_experiment(self.client, experiment_name, self.tracking_uri)
        self.experiment_name = experiment_name

    def end_dead_runs(self) -> None:
        """End this experiment's runs whose process died (kill -9) FAILED, and say so in one line."""
        dead = mark_dead_runs_failed(self.client, self.experiment_id)
        if dead:
            pids = sorted({r.data.tags.get(PID_TAG, "?") for r in dead})
            log.warning("%d run(s) of experiment '%s' were left RUNNING by process(es) %s, which no longer exist; "
                        "marked FAILED: %s", len(dead), self.experiment_name, ", ".join(pids),
                        ", ".join(r.info.run_id for r in dead))

    def ui_command(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {self.tracking_uri}"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    @contextlib.contextmanager
    def job_run(self, cfg: DictConfig, output_dir: Path, tags: dict[str, str] | None = None):
        """The parent run of one invocation: params, resolved config and Hydra files."""
        parent = os.environ.get(PARENT_RUN_ENV)
        run = mlflow.start_run(experiment_id=self.experiment_id, parent_run_id=parent,
                               run_name=tags.get("mlflow.runName") if tags else None,
                               tags={**(tags or {}), **process_tags()})
        with closing_run(run):
            resolved = OmegaConf.to_container(cfg, resolve=True)
            mlflow.log_params(flatten(resolved))
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
            hydra_dir = output_dir / ".hydra"
            if hydra_dir.is_dir():
                mlflow.log_artifacts(str(hydra_dir), "config/hydra")
            try:
                yield run
            finally:
                self._log_log_files(output_dir)

    @staticmethod
    def _log_log_files(output_dir: Path) -> None:
        for path in output_dir.glob("*.log"):
            with contextlib.suppress(Exception):
                mlflow.log_artifact(str(path), "logs")

    @contextlib.contextmanager
    def phase_run(self, name: str, tags: dict[str, str] | None = None):
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True,
                               tags={"phase": name, **(tags or {}), **process_tags()})
        with closing_run(run):
            yield run

    @staticmethod
    def log_metrics(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
