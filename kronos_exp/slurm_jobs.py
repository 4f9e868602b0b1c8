"""SLURM jobs as their users expect, for the ``hydra/launcher=slurm`` launcher
(``hydra_plugins/kronos_slurm_launcher``: hydra-submitit-launcher's, calling these; imported only
when a sweep uses it, since Hydra imports every plugin module on every start).

- **Requeue at the time limit or on preemption.** SLURM sends submitit's signal (USR2)
  ``signal_delay_s`` before a job's time limit. Here it means what SIGTERM means to the run at that
  moment: training stops at its next optimizer step and saves its state, the runs end KILLED. Then
  submitit's own handler checkpoints the job and requeues it (``max_num_timeout`` times at most for
  time limits); started again, the job continues its job run (tag ``slurm_attempts``), and the
  phase continues its own phase run from that state (tracking/lifecycle.py; the same tag counts its
  attempts): one job run and one run per phase, not a KILLED run per attempt.
- **A job that cannot be requeued** ends without a traceback: its job run gets the tag
  ``not_requeued``, which the sweep's summary prints as one line saying how to resume.
- **A job SLURM ends without a result** (``scancel``, a lost node, out of memory) is one line
  in the sweep's summary, with the job counted as not finished, not submitit's
  ``UncompletedJobError`` traceback.
- **Clusters without accounting** (no slurmdbd): submitit polls job states with ``sacct``, which
  then fails on every poll with a warning. The sweep's first poll finds that out, says it once
  (once per sweep, whatever its batches), and later polls ask ``squeue``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus
from submitit.core.job_environment import JobEnvironment, SignalHandler
from submitit.core.utils import UncompletedJobError
from submitit.slurm import slurm

from .hydra_job import mlflow_settings
from .tracking.resume import ATTEMPTS_TAG
from .tracking.runs import CONTINUE_RUN_ENV, PARENT_RUN_ENV
from .tracking.sweep import (NOT_REQUEUED_TAG, SWEEP_ID_ENV, JobInfo, newest_job_run, record_job_tag,
                             record_stopped_job)
from .train.interrupt import outside_database_calls

log = logging.getLogger(__name__)


class _AccountingOrQueueWatcher(slurm.SlurmInfoWatcher):
    """Job states from ``sacct``, or from ``squeue`` where SLURM keeps no accounting."""

    accounting: bool | None = None  # unknown until the first poll

    def update(self) -> None:
        if self.accounting is None:
            command = super()._make_command()
            if command is None:
                return
            probe = subprocess.run(command, capture_output=True, text=True, check=False)
            self.accounting = probe.returncode == 0 or "accounting storage is disabled" not in probe.stderr
            if not self.accounting:
                log.info("SLURM keeps no job accounting here (%s): job states come from squeue",
                         probe.stderr.strip())
        super().update()

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None or self.accounting:
            return command
        ids = [command[i + 1] for i, word in enumerate(command) if word == "-j"]
        return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", "--jobs", ",".join(ids)]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if not self.accounting:  # squeue's lines, under sacct's header
            string = "JobID|State|NodeList\n" + (string if isinstance(string, str) else string.decode())
        return super().read_info(string)


class _StopForRequeue:
    """submitit's signal, taken as what SIGTERM means to the run at that moment (a stop at the
    next step, its state saved, the runs ended KILLED); before the run has a stop of its own,
    submitit's handler acts at once (checkpoint and requeue: nothing trained yet)."""

    def __init__(self, requeue: Callable[[int, Any], None]) -> None:
        self.requeue, self.signum, self.requeued = requeue, None, False

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = signum
        stop = signal.getsignal(signal.SIGTERM)
        if isinstance(getattr(stop, "__self__", None), SignalHandler):  # submitit's own: no run yet
            self.requeued = True
            self.requeue(signum, frame)
        elif callable(stop):
            stop(signum, frame)


def watch_jobs() -> None:
    """Poll this sweep's SLURM jobs through ``_AccountingOrQueueWatcher`` (submitit keeps one
    watcher for every SLURM job, on its job class). A sweeper launches its jobs in batches: they
    share the one watcher, so what the first poll found (no accounting) is said once per sweep."""
    if not isinstance(slurm.SlurmJob.watcher, _AccountingOrQueueWatcher):
        slurm.SlurmJob.watcher = _AccountingOrQueueWatcher(delay_s=600)


@dataclass(frozen=True)
class Unfinished:
    """What a SLURM job that ended without a result returns to the sweep, in place of submitit's
    UncompletedJobError (whose traceback would end the whole sweep)."""
    job_id: str
    state: str
    log: Path

    def note(self) -> str:
        if self.state.startswith("CANCELLED"):
            why = f"cancelled in SLURM (job {self.job_id}, state {self.state}: scancel, or an administrator)"
        else:
            why = f"ended by SLURM without a result (job {self.job_id}, state {self.state})"
        return f"{why}; its log: {self.log}; run the same command again to resume it from its last training state"


class _ReportedJob(slurm.SlurmJob):
    """submitit's SLURM job whose ``results`` are ``[Unfinished]`` where it would raise UncompletedJobError."""

    def results(self) -> list[Any]:
        try:
            return super().results()
        except UncompletedJobError:
            return [Unfinished(self.job_id, self.state, self.paths.stdout)]


@contextlib.contextmanager
def unfinished_jobs_returned() -> Iterator[None]:
    """While a launch waits on its jobs, one SLURM ended without a result gives ``Unfinished``."""
    job_class = slurm.SlurmExecutor.job_class
    slurm.SlurmExecutor.job_class = _ReportedJob
    try:
        yield
    finally:
        slurm.SlurmExecutor.job_class = job_class


def settle(launcher: Any, returned: Any, overrides: Sequence[str], job_num: int) -> JobReturn:
    """A job's return as the sweeper takes it: for an ``Unfinished`` job, NaN, and its note on the
    job's run, which the sweep's summary prints (said here when the store is out of reach)."""
    if not isinstance(returned, Unfinished):
        return returned
    note = returned.note()
    job = JobInfo(True, job_num, list(overrides), os.environ.get(SWEEP_ID_ENV))
    try:
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        record_stopped_job(mlflow_settings(cfg), job, note)
    except Exception:
        log.warning("job %s: %s", job_num, note)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=math.nan)


def run_requeueable(launcher: Any, run: Callable[[], JobReturn], sweep_overrides: Sequence[str],
                    job_num: int) -> JobReturn:
    """``run()`` the job (in the SLURM job); stopped by submitit's signal, requeue it through
    submitit's handler, or, when it may not be requeued again, say so and let the sweep go on."""
    usr = JobEnvironment._usr_sig()
    requeue = signal.getsignal(usr)  # submitit's: checkpoint, then requeue and exit
    if not callable(requeue):  # (not a submitit job)
        return run()
    handler = _StopForRequeue(requeue)
    _continue_job_run(launcher, sweep_overrides, job_num)
    signal.signal(usr, outside_database_calls(handler))
    try:
        return run()
    except (SystemExit, KeyboardInterrupt):
        if handler.signum is None or handler.requeued:
            raise
    finally:
        signal.signal(usr, requeue)
    try:
        requeue(handler.signum, None)  # requeues the job and exits this process
    except UncompletedJobError as err:
        return _not_requeued(launcher, sweep_overrides, job_num, str(err))
    raise SystemExit(1)  # (submitit's handler always exits or raises)


def _continue_job_run(launcher: Any, sweep_overrides: Sequence[str], job_num: int) -> None:
    """In a requeued attempt (``SLURM_RESTART_COUNT`` >= 1), continue the job run of this sweep's job
    ``job_num`` (the newest with its sweep run as parent and its ``job_num``): one job run per sweep
    job, tagged with its attempts (``ATTEMPTS_TAG``: how many times the job started), not a KILLED
    run per attempt; its phases then continue their own runs. Where the store cannot say, the
    attempt opens a run of its own (the sweep's table shows the newest), as before."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts < 1 or not os.environ.get(PARENT_RUN_ENV):
        return
    try:
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(sweep_overrides))
        client, _, run = newest_job_run(mlflow_settings(cfg), job_num)
        if run is not None:
            client.set_tag(run.info.run_id, ATTEMPTS_TAG, str(restarts + 1))
            os.environ[CONTINUE_RUN_ENV] = run.info.run_id
            log.info("job %s: attempt %d continues its run %s", job_num, restarts + 1, run.info.run_id)
    except Exception as err:
        log.warning("job %s: attempt %d opens a new run (its earlier run was not found: %s)", job_num,
                    restarts + 1, str(err).splitlines()[0] if str(err) else type(err).__name__)


def _not_requeued(launcher: Any, sweep_overrides: Sequence[str], job_num: int, reason: str) -> JobReturn:
    """Tag the job's run with why it stopped and how to resume it; the sweep goes on."""
    reason = reason.removeprefix("Job not requeued because: ").rstrip(".")
    note = (f"stopped by SLURM and not requeued ({reason}; hydra.launcher.max_num_timeout="
            f"{launcher.params.get('max_num_timeout', 0)}); run the same command again to resume it from its "
            "last training state")
    log.warning("job %s: %s", job_num, note)
    with contextlib.suppress(Exception):  # the store may be out of reach: the line above still says it
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(sweep_overrides))
        record_job_tag(mlflow_settings(cfg), job_num, NOT_REQUEUED_TAG, note)
    return JobReturn(overrides=list(sweep_overrides), status=JobStatus.COMPLETED, _return_value=math.nan)
