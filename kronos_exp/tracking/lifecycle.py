"""The life of a phase run, on rank 0: open it (fingerprint and heartbeat together), claim the
fingerprint, then reuse a registered checkpoint, resume an unfinished run or train; keep the best
checkpoint as it is saved, and log and register it at the end.

In a requeued SLURM job's attempt (a continued job run) a phase whose earlier attempt stopped with a
training state that passes every check is not opened anew: that phase run is reopened and trains on
from its state, its attempts counted (``slurm_attempts``); elsewhere, and where it cannot be, a new
phase run resumes it (``resumed_from``) as any rerun does.

Only rank 0 talks to the tracking store. The runner (kronos_exp/runner.py) hands the other ranks
the plan this module decides and the result it registers.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
from torch import nn

from ..errors import TrainingFailed, first_line
from ..model.checkpoint import WEIGHTS_NAME, CheckpointError
from .claims import Claim, Claims, claim
from .fingerprint import FINGERPRINT_TAG, data_files_digest, fingerprint, folder_digests
from .plots import log_loss_curve
from .registry import FINGERPRINT_ARTIFACT, RegisteredCheckpoint, Registry, write_registration
from .resume import (ATTEMPTS_TAG, BEST_MAC_TAG, RESUMED_FROM_TAG, STATE_MAC_TAG, STATE_TAG, Unfinished, best_fields,
                     continuable, copy_best, finished_in_job, lineage, state_fields, state_file)
from .signatures import sign
from .runs import Tracker, as_given, flatten

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"


@dataclass
class PhaseResult:
    name: str
    checkpoint_dir: Path
    fingerprint: str
    val_loss: float
    version: RegisteredCheckpoint | None
    skipped: bool
    val_history: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # what a measuring step reports to the job run
    tags: dict[str, str] = field(default_factory=dict)  # its verdicts, as words, for the job run
    summary: list[str] = field(default_factory=list)  # its lines in the run's closing summary


@dataclass(frozen=True)
class Plan:
    """What every rank does with a phase: train into ``best_dir`` (in this invocation's folder),
    keeping the resumable ``last`` state beside it (checkpoints/<phase>.last.safetensors);
    continue from the state ``resume_from`` (an earlier run's, checked) when given."""
    best_dir: Path
    resume_from: Path | None = None

    @property
    def resume(self) -> bool:
        return self.resume_from is not None

    @property
    def state_path(self) -> Path:
        return state_file(self.best_dir.parent.parent, self.best_dir.name)


class PhaseRunFactory:
    """Opens the phase runs (PhaseRun) of one invocation, each decided by the same policy
    (``skip_existing``, ``resume``) against the same registry and claims."""

    def __init__(self, tracker: Tracker, output_dir: Path, *, skip_existing: bool, resume: bool | None,
                 heartbeat_s: float, version_tags: dict[str, str] | None = None,
                 given: dict[str, str] | None = None):
        self.tracker, self.output_dir = tracker, output_dir
        self.given = given or {}  # the command line's values as typed, by key: the params show them so (as_given)
        self.version_tags = version_tags or {}  # on every version this invocation registers (its Optuna trial)
        self.registry = Registry(tracker.client)
        self.skip_existing, self.resume = skip_existing, resume
        self.claims = Claims(tracker.client, tracker.experiment_id, heartbeat_s)

    @contextlib.contextmanager
    def open(self, name: str, inputs: dict[str, Any], settings: dict[str, Any], tags: dict[str, str],
             claims: bool = True) -> Iterator["PhaseRun"]:
        """The nested MLflow run of phase ``name``. With ``claims``, it holds its fingerprint from
        its first moment (the heartbeat tag is set at creation) until it ends. In a continued job
        run, the phase run its earlier attempt left to continue (``continuable``), reopened."""
        fp = fingerprint(inputs)
        first_beat = self.claims.first_beat() if claims else {}
        earlier = self._continuable(name, fp) if claims else None
        run_tags = {FINGERPRINT_TAG: fp, **first_beat, **tags}
        if earlier is not None:
            run_tags[ATTEMPTS_TAG] = str(earlier[0].attempts + 1)
        with self.tracker.nested_run(name, tags=run_tags, continued=earlier and earlier[0].run_id) as run:
            beating = self.claims.heartbeat(run.info.run_id) if claims else contextlib.nullcontext()
            with beating:
                mlflow.log_params(as_given(flatten({name: settings}), self.given))
                mlflow.log_dict(inputs, FINGERPRINT_ARTIFACT)
                yield PhaseRun(self, name, fp, inputs, run.info.run_id, continued=earlier)

    def done_earlier_in_job(self, name: str, inputs: dict[str, Any], model_name: str) -> PhaseResult | None:
        """In a continued job run (unless ``resume=false``): the result of phase ``name`` that an
        earlier attempt of this job finished, taken from its registered version without a phase run
        of its own, so that the job keeps one run per phase whatever its attempts; None where there
        is none (or its version does not download intact: a phase run then decides as usual)."""
        job_run = self.tracker.continued_job_run
        fp = fingerprint(inputs)
        if job_run is None or self.resume is False or not finished_in_job(
                self.tracker.client, self.tracker.experiment_id, job_run, name, fp):
            return None
        hit = self.registry.fetch(model_name, fp, self.output_dir / "reused")
        if hit is None:
            return None
        version, folder = hit
        log.info("%s: finished by an earlier attempt of this job; using %s", name, version.label)
        return PhaseResult(name, folder, fp, float(version.tags.get("best_val_loss", "nan")), version, skipped=True)

    def _continuable(self, name: str, fp: str) -> tuple[Unfinished, dict[str, str]] | None:
        """In a continued job run (unless ``resume=false``): its earlier attempt's phase run of
        ``name`` and ``fp``, checked and taken back, and its best checkpoint's digests."""
        job_run = self.tracker.continued_job_run
        if job_run is None or self.resume is False:
            return None
        return continuable(self.tracker.client, self.tracker.experiment_id, job_run, name, fp, alive=self.claims.alive)


class PhaseRun:
    """One phase run on rank 0, from its decision to its registered checkpoint."""

    def __init__(self, runs: PhaseRunFactory, name: str, fp: str, inputs: dict[str, Any], run_id: str,
                 continued: tuple[Unfinished, dict[str, str]] | None = None):
        self.runs, self.name, self.fingerprint, self.inputs, self.run_id = runs, name, fp, inputs, run_id
        self.continued = continued  # (this run as its earlier attempt left it, its best checkpoint's digests)
        self._saved: dict[str, str] = {}  # sha256 of each best-checkpoint file as this process wrote it
        self._signed: dict[str, tuple[str, ...]] = {}  # tag -> signatures of the newest files it wrote
        self._state_tag = ""  # the state file's path as its tag names it (and its signatures cover)

    # -- before training ------------------------------------------------------------------
    def decide(self, model_name: str) -> PhaseResult | Plan:
        """Claim the fingerprint; the registered result to reuse, or the plan to train by."""
        runs = self.runs
        own = runs.output_dir / "checkpoints" / self.name
        if self.continued is not None:  # taken back already: this run holds its fingerprint again
            earlier, best = self.continued
            mlflow.set_tag("skipped", "false")
            log.info("%s: continuing run %s (attempt %d) from %s", self.name, self.run_id, earlier.attempts + 1,
                     earlier.state_path)
            # The signatures its earlier attempt recorded: the state it continues from stays resumable
            # until one of this attempt's replaces it.
            self._signed = {STATE_MAC_TAG: earlier.state_macs, BEST_MAC_TAG: earlier.best_macs}
            return self._resuming(earlier, best, own)
        decided: Claim = claim(runs.claims, self.name, self.fingerprint, self.run_id,
                               skip_existing=runs.skip_existing, resume=runs.resume)
        if decided.action == "resume":
            unfinished = decided.unfinished
            mlflow.set_tags({"skipped": "false", RESUMED_FROM_TAG: unfinished.run_id})
            log.info("%s: resuming run %s from %s", self.name, unfinished.run_id, unfinished.state_path)
            return self._resuming(unfinished, decided.best, own)
        if decided.action == "reuse":
            reused = self.reuse(model_name)
            if reused is not None:
                return reused
        if runs.resume:
            log.info("%s: resume=true but no unfinished run has fingerprint %s; training from the start",
                     self.name, self.fingerprint[:12])
        mlflow.set_tag("skipped", "false")
        return self._training(Plan(own))

    def _resuming(self, unfinished: Unfinished, best: dict[str, str], own: Path) -> Plan:
        """The plan that trains on from ``unfinished``'s checked state, into ``own`` (its own folder
        where a requeued job continues it), with its checked best checkpoint."""
        plan = self._training(Plan(own, resume_from=unfinished.state_path))
        if best:  # the best checkpoint before the stop (a requeued job's is in this folder already)
            copy_best(unfinished, best, own)
            self._saved = best
            self._sign_best(best)
        return plan

    def _training(self, plan: Plan) -> Plan:
        self._state_tag = str(plan.state_path.resolve())
        mlflow.set_tag(STATE_TAG, self._state_tag)
        return plan

    def reuse(self, model_name: str) -> PhaseResult | None:
        hit = self.runs.registry.fetch(model_name, self.fingerprint, self.runs.output_dir / "reused")
        if hit is None:
            log.info("%s: no registered checkpoint with fingerprint %s, training", self.name, self.fingerprint[:12])
            return None
        version, folder = hit
        val_loss = float(version.tags.get("best_val_loss", "nan"))
        mlflow.set_tags({"skipped": "true", "reused_version": version.version, "reused_run_id": version.run_id})
        mlflow.log_metric("best_val_loss", val_loss)
        log.info("%s: reusing %s (fingerprint %s)", self.name, version.label, self.fingerprint[:12])
        return PhaseResult(self.name, folder, self.fingerprint, val_loss, version, skipped=True)

    # -- while training -------------------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        mlflow.log_param(f"{self.name}.{key}", value)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.runs.tracker.log_metrics(metrics, step)

    def record_state(self, digest: str) -> None:
        """The loop's ``on_state_saved``: sign the new state (keeping the previous signature: a kill
        before the rename leaves that file) so that a resume can tell it is this user's."""
        self._record(STATE_MAC_TAG, lambda: state_fields(self.run_id, self.fingerprint, self.name,
                                                          Path(self._state_tag), digest), f"training state {digest[:12]}")

    def save_best(self, plan: Plan) -> Callable[[nn.Module, int, float], None]:
        """The loop's ``on_best``: save the model as the best checkpoint, signed before it replaces
        the previous one, and remember its digests."""
        def signed(new: Path) -> None:  # the new folder holds BEST_FILES: hashed once, here
            self._saved = folder_digests(new)
            self._sign_best(self._saved)

        def save(model: nn.Module, epoch: int, val_loss: float) -> None:
            model.save_pretrained(plan.best_dir, before_replace=signed)
        return save

    def _sign_best(self, digests: dict[str, str]) -> None:
        self._record(BEST_MAC_TAG, lambda: best_fields(self.run_id, self.fingerprint, self.name, digests),
                     "best checkpoint")

    def _record(self, tag: str, fields: Callable[[], tuple[str, ...]], what: str) -> None:
        """Sign a file this run wrote and record the signature under ``tag`` with the one before.
        While the server is away (the metric buffer cannot send) it is not tried, so training never
        waits on it; a resume then refuses that file and trains afresh."""
        tracker = self.runs.tracker
        try:
            if tracker.metrics.last_error is not None:
                raise ConnectionError("the tracking server is away")
            self._signed[tag] = (sign(*fields()), *self._signed.get(tag, ())[:1])
            tracker.client.set_tag(self.run_id, tag, " ".join(self._signed[tag]))
        except Exception as err:  # training goes on; the file just cannot be resumed
            log.warning("%s: the signature of %s was not recorded (%s); it cannot be resumed",
                        self.name, what, first_line(err))

    # -- after training -------------------------------------------------------------------
    def finish(self, plan: Plan, fit, model_name: str, package: Callable[[Path], None],
               version_tags: dict[str, str]) -> PhaseResult:
        """Check, log and register the best checkpoint that training left in ``plan.best_dir``."""
        self.runs.tracker.wait_for_metrics()  # the checkpoint is on disk; a lost server may come back meanwhile
        best_dir = plan.best_dir
        if fit.best_epoch < 0:
            raise TrainingFailed(f"{self.name}: the validation loss was never finite ({fit.val_history}); "
                                 f"no checkpoint to keep. Lower {self.name}.lr or check the data")
        if folder_digests(best_dir) != self._saved:
            raise CheckpointError(f"{best_dir} changed after this run saved it (another process writing the same "
                                  "folder?); it is not registered. Give each run its own hydra.run.dir")
        stopped = {} if fit.stopped_epoch is None else {"stopped_epoch": fit.stopped_epoch}  # early stopping's
        mlflow.log_metrics({"best_val_loss": fit.best_val_loss, "best_epoch": fit.best_epoch,
                            "samples_per_second": fit.samples_per_second, "duration_s": fit.duration_s, **stopped})
        package(best_dir)
        write_registration(best_dir, model_name, self.fingerprint)
        digests = folder_digests(best_dir)  # every file the version holds, what was added above included
        mlflow.log_artifacts(str(best_dir), CHECKPOINT_ARTIFACT)
        log_loss_curve(self.name, fit)
        version = self.registered_before(model_name) or self.runs.registry.register(
            model_name, self.run_id, CHECKPOINT_ARTIFACT, digests, self.fingerprint,
            tags={"phase": self.name, "best_val_loss": repr(fit.best_val_loss),
                  "data_files": data_files_digest(self.inputs["data"]), **version_tags, **self.runs.version_tags})
        mlflow.set_tag("registered_version", version.version)
        for state in (plan.state_path, plan.resume_from):  # finished: nothing left to resume, and states are large
            if state is not None:
                state.unlink(missing_ok=True)
        return PhaseResult(self.name, best_dir, self.fingerprint, fit.best_val_loss, version, skipped=False,
                           val_history=fit.val_history, duration_s=fit.duration_s,
                           tags={k: str(v) for k, v in stopped.items()})

    def registered_before(self, model_name: str) -> RegisteredCheckpoint | None:
        """The version an earlier run of this lineage (this run and those it resumed from) registered
        with these weights before it died: registering again would make a second version of one
        fingerprint (idempotent registration)."""
        ours = self.runs.registry.find(model_name, self.fingerprint)
        if not ours:
            return None
        runs = set(lineage(self.runs.tracker.client, self.run_id))
        for version in ours:
            if version.run_id in runs and version.tags.get("sha256") == self._saved.get(WEIGHTS_NAME):
                log.info("%s: %s was registered by run %s before it stopped; not registering again",
                         self.name, version.label, version.run_id)
                return version
        return None
