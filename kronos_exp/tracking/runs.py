"""MLflow runs: one per invocation (the job), one nested run per phase.

Tracking is told what happened; it never decides training. Every run it opens is closed with
FINISHED, FAILED (an exception, or a failure elsewhere that the pipeline names) or KILLED (Ctrl-C /
SIGTERM), never left RUNNING: a run the server does not let it end is recorded and ended as soon
as the server answers again, by this process or the next invocation (tracking/stale.py). A requeued
SLURM job's attempt reopens the job run its earlier attempt ended (``CONTINUE_RUN_ENV``), and the
phase runs it continues (tracking/lifecycle.py), RUNNING again without the reason they stopped.
"""
from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import yaml
from filelock import FileLock
from mlflow.tracking import MlflowClient

from ..errors import TrialPruned, UserError, first_line
from ..redact import mask_passwords
from ..schemas import MlflowConfig
from .buffer import MetricBuffer
from .stale import (PID_TAG, REASON_TAGS, Unended, end_recorded, left_unended, mark_dead_runs_failed,
                    process_tags, record_unended, unended_folder)
from .store_template import seed_new_store
from .uris import is_remote, resolve_tracking_uri, sqlite_path, without_login
from .ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, LOCAL_UI, ensure_training_kind, runs_page

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "KRONOS_EXP_PARENT_RUN_ID"  # set by a sweep to nest its jobs under one run
# Set by a requeued SLURM job (kronos_exp/slurm_jobs.py): the job run its earlier attempt opened, to continue.
CONTINUE_RUN_ENV = "KRONOS_EXP_CONTINUE_JOB_RUN"


class TrackingUnavailable(UserError, RuntimeError):
    """The MLflow tracking server does not answer (at start, or lost during the run)."""


def server_answers(uri: str, timeout_s: float = 3.0) -> bool:
    """Whether anything answers HTTP at ``uri`` (any status counts: the server is there)."""
    try:
        urllib.request.urlopen(f"{without_login(uri).rstrip('/')}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def bound_http_retries(timeout_s: int, max_retries: int) -> None:
    """MLflow's HTTP client retries a dead server for minutes per call by default; make a lost
    server cost seconds per call, so no call blocks an interrupt or the end of a run for long."""
    os.environ.update(MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_s), MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(max_retries),
                      MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="0")
    # The metric buffer says once that the server is away; urllib3 would add a line per retry.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Experiment id for ``name``, of the training kind (an existing one without a kind gets it);
    local stores keep artifacts beside the database under outputs/."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        database = sqlite_path(tracking_uri)
        location = (database.parent / "mlartifacts").resolve().as_uri() if database is not None else None
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
            experiment = client.get_experiment_by_name(name)
    ensure_training_kind(client, experiment.experiment_id, experiment.tags)
    return experiment.experiment_id


def as_given(params: dict[str, str], given: dict[str, str]) -> dict[str, str]:
    """``params`` with each number the command line gave spelled as given (``lr=5``: ``5``, not the
    typed config's ``5.0``; ``1e-3``, not ``0.001``), so a run's params read as its overrides and
    its Optuna trial's params do. A value that differs from what was given (an interpolation, a
    string) stays as resolved."""
    shown = dict(params)
    for key, text in given.items():
        try:
            same = key in params and float(params[key]) == float(text)
        except ValueError:
            continue
        if same:
            shown[key] = text
    return shown


def flatten(values: Any, prefix: str = "") -> dict[str, str]:
    """``{"tokenizer.arch.d_model": "32", ...}`` for MLflow params."""
    out: dict[str, str] = {}
    if isinstance(values, dict):
        for k, v in values.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(values, list):
        out[prefix[:-1]] = ",".join(map(str, values))
    else:
        out[prefix[:-1]] = str(values)
    return out


class Tracker:
    """The MLflow side of one invocation."""

    def __init__(self, tracking_uri: str | None, experiment_name: str, http_timeout_s: int = 10,
                 http_max_retries: int = 2, offline_wait_s: float = 30.0):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.offline_wait_s = offline_wait_s
        if is_remote(self.tracking_uri):
            bound_http_retries(http_timeout_s, http_max_retries)
            if self.shown_uri != self.tracking_uri:  # MLflow prints each run's page with the login in it
                os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
            if not server_answers(self.tracking_uri):
                raise TrackingUnavailable(
                    f"no MLflow tracking server answers at mlflow.tracking_uri={self.tracking_uri}; start it "
                    "(mlflow server ...), fix the address, or use mlflow.tracking_uri=null for the local store")
        mlflow.set_tracking_uri(self.tracking_uri)
        database = sqlite_path(self.tracking_uri)
        if database is not None:
            self._open_sqlite_store(database, experiment_name)
        else:
            self._open_store(experiment_name)
        self.experiment_name = experiment_name
        self._metrics: MetricBuffer | None = None  # started by the first metric (a thread does not pickle)
        self._unended = unended_folder(self.tracking_uri)
        self.continued_job_run: str | None = None  # the earlier attempt's job run this one continues (CONTINUE_RUN_ENV)
        # Set by the pipeline: the failure elsewhere (another torchrun process) that an error or stop here follows.
        self.failure_elsewhere: Callable[[], str | None] = lambda: None

    @classmethod
    def from_settings(cls, settings: MlflowConfig) -> "Tracker":
        """The tracker of the ``mlflow`` section: its store, experiment and how long a remote server may take."""
        return cls(settings.tracking_uri, settings.experiment_name, settings.http_timeout_s, settings.http_max_retries,
                   settings.offline_wait_s)

    @property
    def shown_uri(self) -> str:
        """The tracking URI as printed: its password masked."""
        return mask_passwords(self.tracking_uri)

    @property
    def metrics(self) -> MetricBuffer:
        if self._metrics is None:
            self._metrics = MetricBuffer(self.client)
        return self._metrics

    def _open_sqlite_store(self, database: Path, experiment_name: str) -> None:
        """Open (or create) a local store, one line of error when it cannot be used. MLflow creates
        and migrates the schema when it first opens a database; processes doing that at once on a
        new store collide, so they take turns."""
        advice = "or point mlflow.tracking_uri=sqlite:///<path> at another file"
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
            if database.exists() and not os.access(database, os.W_OK):
                raise PermissionError(13, "the file is read-only", str(database))
            with FileLock(f"{database}.init.lock"):
                seed_new_store(database)
                self.client = MlflowClient(self.tracking_uri)
                self.experiment_id = ensure_experiment(self.client, experiment_name, self.tracking_uri)
        except OSError as err:
            raise TrackingUnavailable(f"cannot write the MLflow store {database} ({err.strerror}); make its folder "
                                      f"writable, {advice}") from None
        except Exception as err:  # sqlalchemy / MLflow: not a database, or a schema MLflow cannot migrate
            raise TrackingUnavailable(f"cannot open the MLflow store {database} ({first_line(err)}); if it is damaged, "
                                      f"move it aside and run again (a new store is created), {advice}") from None

    def _open_store(self, experiment_name: str) -> None:
        """Open a server's or another database's store, one line of error (its password masked, as
        the URL is the user's) when it cannot be used, rather than a traceback under Hydra's line
        that repeats the command line's overrides."""
        try:
            self.client = MlflowClient(self.tracking_uri)
            self.experiment_id = ensure_experiment(self.client, experiment_name, self.tracking_uri)
        except Exception as err:  # MLflow / sqlalchemy: no driver, host or database, a login refused
            raise TrackingUnavailable(
                f"cannot open the MLflow store at mlflow.tracking_uri={self.tracking_uri} ({first_line(err)}); install "
                "its database driver, fix the address or login, or use mlflow.tracking_uri=null for the local store"
            ) from None

    def lost_server_message(self, output_dir: Path) -> str | None:
        """When a remote server stopped answering: one line saying so and where the checkpoints are."""
        if not is_remote(self.tracking_uri) or server_answers(self.tracking_uri):
            return None
        folders = sorted(p for p in (output_dir / "checkpoints").glob("[!.]*") if p.is_dir())
        where = (f"the checkpoints are on local disk: {', '.join(map(str, folders))}" if folders
                 else "no checkpoint was saved before that")
        unended = ("; it marks the MLflow runs left RUNNING here FAILED" if left_unended() else "")
        return (f"lost the MLflow tracking server at {self.tracking_uri} during the run, so the run could not be "
                f"recorded there; {where}. Run the same command again once the server is back{unended}")

    def end_dead_runs(self) -> None:
        """End the runs an earlier process could not end (the server was away) as they ended, and
        this experiment's runs whose process died (kill -9) FAILED; say so in one line each."""
        ended = end_recorded(self.client, self._unended)
        if ended:
            log.warning("%d run(s) left RUNNING while the tracking server did not answer are ended now: %s", len(ended),
                        ", ".join(f"{r.run_id} {r.status}" for r in ended))
        dead = mark_dead_runs_failed(self.client, self.experiment_id)
        if dead:
            pids = sorted({r.data.tags.get(PID_TAG, "?") for r in dead})
            log.warning("%d run(s) of experiment '%s' were left RUNNING by process(es) %s, which no longer exist; "
                        "marked FAILED: %s", len(dead), self.experiment_name, ", ".join(pids),
                        ", ".join(r.info.run_id for r in dead))

    @contextlib.contextmanager
    def _closing(self, run: mlflow.ActiveRun) -> Iterator[mlflow.ActiveRun]:
        """End ``run`` as FINISHED, KILLED (interrupt, or a search pruned the trial) or FAILED
        (exception, or a failure elsewhere)."""
        try:
            yield run
        except BaseException as err:
            elsewhere = self.failure_elsewhere()
            if isinstance(err, TrialPruned):  # stopped by a search, not failed
                self._end(Unended(run.info.run_id, "KILLED", str(err)))
            elif isinstance(err, KeyboardInterrupt) and elsewhere is None:
                self._end(Unended(run.info.run_id, "KILLED", f"interrupted ({err or 'Ctrl-C'})"))
            else:
                reason = elsewhere or mask_passwords(f"{type(err).__name__}: {err}")[:5000]
                self._end(Unended(run.info.run_id, "FAILED", reason))
            raise  # the error the user must see is ``err``, not one from ending the run
        else:
            self._end(Unended(run.info.run_id, "FINISHED"))

    def _end(self, run: Unended) -> None:
        """End the active ``run``; one the server does not let end is recorded, to end when it answers."""
        if left_unended() and (not is_remote(self.tracking_uri) or server_answers(self.tracking_uri)):
            end_recorded(self.client, self._unended, mine_only=True)  # the server may be back meanwhile
        try:
            mlflow.end_run(run.status)  # off the stack of active runs first, then to the server
            if run.reason and run.status in REASON_TAGS:
                self.client.set_tag(run.run_id, REASON_TAGS[run.status], run.reason)
        except Exception:
            with contextlib.suppress(OSError):  # (a full disk: then the next invocation ends it FAILED)
                record_unended(self._unended, run)
            if run.status == "FINISHED":
                raise

    def ui_command(self, view: str | None = None) -> str:
        """How to see this experiment's runs (in a saved ``view``): the server's page, or the command
        that serves a local store and the page it then shows."""
        if is_remote(self.tracking_uri):
            return f"open {runs_page(without_login(self.tracking_uri), self.experiment_id, view)}"
        return (f"mlflow ui --backend-store-uri {self.shown_uri}, then "
                f"{runs_page(LOCAL_UI, self.experiment_id, view)}")

    @contextlib.contextmanager
    def job_run(self, resolved: dict[str, Any], output_dir: Path, tags: dict[str, str] | None = None,
                given: dict[str, str] | None = None):
        """The parent run of one invocation: params (numbers the command line ``given`` as typed:
        ``as_given``), the resolved config (plain values) and Hydra files (their URL passwords masked:
        kronos_exp.hydra_callbacks.MaskPasswords did the files')."""
        run = self._start_job_run(tags or {})
        with self._closing(run):
            params = as_given(flatten(resolved), given or {})
            mlflow.log_params({k: mask_passwords(v) for k, v in params.items()})
            mlflow.log_text(mask_passwords(yaml.safe_dump(resolved, sort_keys=False)), "config/resolved.yaml")
            hydra_dir = output_dir / ".hydra"
            if hydra_dir.is_dir():
                mlflow.log_artifacts(str(hydra_dir), "config/hydra")
            try:
                yield run
            finally:
                self._log_log_files(output_dir)

    def _start_job_run(self, tags: dict[str, str]) -> mlflow.ActiveRun:
        """A new job run, or, in a requeued SLURM job (``CONTINUE_RUN_ENV``, read once), its earlier
        attempt's run RUNNING again, in this process, without the reason that attempt stopped."""
        continued = os.environ.pop(CONTINUE_RUN_ENV, None)
        if continued:
            run = mlflow.start_run(run_id=continued, tags={**tags, **process_tags()})
            self._forget_why_it_stopped(run, ("KILLED",))
            self.continued_job_run = continued
            return run
        parent = self._live_sweep(os.environ.get(PARENT_RUN_ENV))
        return mlflow.start_run(experiment_id=self.experiment_id, parent_run_id=parent,
                                run_name=tags.get("mlflow.runName"), tags={**tags, **process_tags()})

    def record(self, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
               documents: dict[str, Any] | None = None) -> None:
        """Metrics, tags and JSON documents (by artifact name) on the run active in this process."""
        if metrics:
            mlflow.log_metrics(metrics)
        if tags:
            mlflow.set_tags(tags)
        for name, document in (documents or {}).items():
            mlflow.log_dict(document, name)

    def _live_sweep(self, run_id: str | None) -> str | None:
        """``run_id`` if it names a sweep run that is still RUNNING; a stale id left in the
        environment by an earlier sweep is ignored, so this run does not nest under a dead one."""
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run = None
        if run is None or run.info.status != "RUNNING" or run.data.tags.get("kind") != "sweep":
            log.warning("ignoring %s=%s: not a running sweep in this store", PARENT_RUN_ENV, run_id)
            return None
        return run_id

    @staticmethod
    def _log_log_files(output_dir: Path) -> None:
        for path in output_dir.glob("*.log"):
            with contextlib.suppress(Exception):
                mlflow.log_artifact(str(path), "logs")

    def _forget_why_it_stopped(self, run: mlflow.ActiveRun, statuses: tuple[str, ...]) -> None:
        """Drop the reason tags (REASON_TAGS) of the ``statuses`` a run that goes on here ended with."""
        for status in statuses:
            if REASON_TAGS[status] in run.data.tags:
                with contextlib.suppress(mlflow.exceptions.MlflowException):  # (gone meanwhile)
                    self.client.delete_tag(run.info.run_id, REASON_TAGS[status])

    @contextlib.contextmanager
    def nested_run(self, name: str, tags: dict[str, str] | None = None, continued: str | None = None):
        """A phase's run, nested in the job run: ended like every run here, its metrics on the server
        first. ``continued``: an earlier attempt's phase run of this (continued) job run, RUNNING again,
        without the reason it stopped."""
        tags = {"phase": name, **(tags or {}), **process_tags()}
        if continued:
            run = mlflow.start_run(run_id=continued, nested=True, tags=tags)
            self._forget_why_it_stopped(run, tuple(REASON_TAGS))
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True, tags=tags)
        with self._closing(run):
            try:
                yield run
            except BaseException:
                if self._metrics is not None:
                    self._metrics.flush(1.0)
                raise
            self.wait_for_metrics()  # every metric of the phase is on the server before its run ends

    def wait_for_metrics(self) -> None:
        """Block until the metrics handed over so far are on the server, giving a lost server
        ``offline_wait_s`` to come back; training itself never waits on this."""
        if self._metrics is not None and not self._metrics.flush(self.offline_wait_s):
            raise TrackingUnavailable(f"the tracking server at {self.tracking_uri} took no metrics for "
                                      f"{self.offline_wait_s:g}s ({self.metrics.last_error})")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Hand metrics of the active run to the buffer; training goes on at once."""
        self.metrics.put(mlflow.active_run().info.run_id, metrics, step)
