"""Sweeps in MLflow: one parent run per Hydra multirun, each job a child of it, and a summary
table of the jobs, best first, at the end. The Hydra callback that drives it is in
kronos_exp/hydra_callbacks.py; what Hydra says about a job and its sweep (kronos_exp/hydra_job.py)
arrives here as plain values.

The fluent MLflow API keeps its active run per process, and launchers run jobs in this process
(basic) or in workers (joblib), so the sweep run is created with the client and its id reaches
the jobs through the environment.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from ..errors import error_line, first_line
from ..metric_names import MIN_DATES, SHORT_VERDICTS
from ..redact import mask_passwords
from ..schemas import MlflowConfig
from .runs import PARENT_RUN_ENV, Tracker, server_answers
from .stale import Unended, process_tags, record_unended, unended_folder
from .ui import column, save_runs_view
from .uris import is_remote, resolve_tracking_uri

log = logging.getLogger(__name__)

SWEEP_ID_ENV = "KRONOS_EXP_SWEEP_ID"


@dataclass
class JobInfo:
    """How this job was launched (kronos_exp.hydra_job.current_job): single run or job ``num`` of a sweep."""
    multirun: bool
    num: int | None
    overrides: list[str]
    sweep_id: str | None
    parallel_jobs: int = 1  # jobs the launcher runs at once here (hydra_job.parallel_jobs)

    def label_log_lines(self) -> None:
        """Prefix this job's log lines with ``[job N]``: parallel jobs write to one terminal, and
        their lines interleave. Hydra configures logging afresh for each job, so this lasts one job."""
        if not self.multirun:
            return
        for handler in logging.getLogger().handlers:
            fmt = handler.formatter._fmt if handler.formatter is not None else "%(message)s"
            if not fmt.startswith("[job "):
                handler.setFormatter(logging.Formatter(f"[job {self.num}]{fmt}"))

    @property
    def run_name(self) -> str:
        """``<sweep_id>-job-N``: unique across sweeps, so a compare view of jobs from several sweeps
        tells them apart."""
        return f"{self.sweep_id}-job-{self.num}" if self.sweep_id else f"job-{self.num}"

    def tags(self) -> dict[str, str]:
        tags = {"overrides": mask_passwords(" ".join(self.overrides)) or "(defaults)"}
        if self.multirun:
            tags.update({"job_num": str(self.num), "mlflow.runName": self.run_name})
            if self.sweep_id:
                tags["sweep_id"] = self.sweep_id
        return tags


def failed_jobs_folder(tracking_uri: str, sweep_run_id: str) -> Path:
    """Where the jobs of a sweep on this machine note that they failed: beside the runs to end
    later (tracking/stale.py), so the sweep can name its failed jobs when the server is lost."""
    return unended_folder(tracking_uri) / "sweeps" / sweep_run_id


def note_failed_job(settings: MlflowConfig, num: int, message: str) -> None:
    """Note, on this machine, that job ``num`` of the running sweep failed (read by ``SweepRun.end``)."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        folder = failed_jobs_folder(resolve_tracking_uri(settings.tracking_uri), parent)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{num}.txt").write_text(mask_passwords(message)[:2000])


def newest_job_run(settings: MlflowConfig, num: int) -> tuple[MlflowClient, str, Run | None]:
    """(client, experiment id, the newest run of job ``num`` of the running sweep or None)."""
    parent = os.environ[PARENT_RUN_ENV]
    client = Tracker.from_settings(settings).client
    experiment_id = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.job_num = '{num}'")
    return client, experiment_id, runs[0] if runs else None


def _add_job_run(client: MlflowClient, experiment_id: str, job: JobInfo, status: str, tags: dict[str, str]) -> None:
    """A run for a job that has none (it never got to open one), ended ``status``: the summary counts it."""
    run = client.create_run(experiment_id, run_name=job.run_name,
                            tags={**job.tags(), "mlflow.parentRunId": os.environ[PARENT_RUN_ENV], **tags,
                                  **process_tags()})
    client.set_terminated(run.info.run_id, status)


def record_failed_job(settings: MlflowConfig, job: JobInfo, message: str) -> None:
    """A sweep job that failed before its MLflow run started (a bad setting for that job) still gets
    a FAILED run under the sweep, so the sweep's summary counts it and the sweep exits non-zero."""
    if not job.multirun or not os.environ.get(PARENT_RUN_ENV):
        return
    note_failed_job(settings, job.num, message)  # first: the store itself may be what failed
    client, experiment_id, run = newest_job_run(settings, job.num)
    if run is None:  # else its run exists and was ended FAILED by the run itself
        _add_job_run(client, experiment_id, job, "FAILED", {"error": message[:5000]})


NOT_REQUEUED_TAG = "not_requeued"  # on a job run SLURM stopped for good: why, and how to resume
SEARCH_STOPS = {"pruned": "PRUNED", "taken_over": "TAKEN OVER"}  # stopped by its search, not failed: tag -> status


def record_job_tag(settings: MlflowConfig, job_num: int, key: str, value: str) -> None:
    """Set a tag on the newest run of this sweep's job ``job_num`` (after the job's own run ended)."""
    if os.environ.get(PARENT_RUN_ENV):
        client, _, run = newest_job_run(settings, job_num)
        if run is not None:
            client.set_tag(run.info.run_id, key, value[:5000])


def record_stopped_job(settings: MlflowConfig, job: JobInfo, note: str) -> None:
    """A job SLURM ended without a result (scancel, say): ``note`` on its run, which the summary
    prints; a job stopped before it opened a run gets a KILLED one, so the summary counts it."""
    note_failed_job(settings, job.num, note)
    client, experiment_id, run = newest_job_run(settings, job.num)
    if run is None:
        _add_job_run(client, experiment_id, job, "KILLED", {NOT_REQUEUED_TAG: note[:5000], "stopped": note[:5000]})
    else:
        client.set_tag(run.info.run_id, NOT_REQUEUED_TAG, note[:5000])


# Forecast quality next to the objective, where the jobs ran the eval phase (the job run's summary):
# the validation error that chose, the test error it reports, and the test verdicts against each reference.
EVAL_COLUMNS = {"eval_val_close_mae": "val_close_mae", "eval_test_close_mae": "test_close_mae"}
VERDICT_COLUMNS = {f"eval_verdict_vs_{ref}": f"test_vs_{ref}" for ref in ("last_value", "drift", "pretrained")}


def _given(row: dict[str, Any]) -> dict[str, str]:
    """A row's overrides, ``k=v`` separated by spaces, as ``{k: v}``."""
    return dict(o.split("=", 1) for o in row.get("overrides", "").split() if "=" in o)


def _override_value(value: str) -> str:
    """An override's value as the table shows it: a float to 4 significant digits (Optuna suggests
    values like 0.0012345678901), anything else as given."""
    if value.lstrip("+-").isdigit():
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def _cell(key: str, value: Any) -> str:
    """Floats to 4 significant digits (enough to rank and to read across a row), except the job's
    ``duration_s``, which is its log line's "done in" to a tenth of a second; several objectives
    side by side."""
    if isinstance(value, list):
        return ", ".join(_cell(key, v) for v in value)
    if isinstance(value, float):
        return f"{value:.1f}" if key == "duration_s" else f"{value:.4g}"
    return SHORT_VERDICTS.get(value, str(value)) if key in VERDICT_COLUMNS else str(value)


def split_overrides(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(the keys whose override differs between jobs, in the order they first appear; the overrides
    every job shares, as given)."""
    jobs = [_given(r) for r in rows]
    keys = list(dict.fromkeys(k for job in jobs for k in job))
    swept = [k for k in keys if len({job.get(k) for job in jobs}) > 1]
    return swept, [f"{k}={jobs[0][k]}" for k in keys if k not in swept]


def _format_table(rows: list[dict[str, Any]]) -> str:
    """The job table: a column per swept parameter, the overrides every job shares on one line above."""
    swept, constant = split_overrides(rows)
    shown = {**EVAL_COLUMNS, **VERDICT_COLUMNS}
    extra = [k for k in shown if any(r.get(k, "") != "" for r in rows)]
    front = ["pareto"] if any("pareto" in r for r in rows) else []  # several objectives: * on the Pareto front
    keys = ["job", *swept, *front, "objective", *extra, "duration_s", "status"]
    headers = [shown.get(k, k) for k in keys]
    cells = [[_override_value(_given(r).get(k, "")) if k in swept else _cell(k, r.get(k, "")) for k in keys]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    table = [line(headers), line(["-" * w for w in widths]), *map(line, cells)]
    if constant:
        table.insert(0, f"every job: {' '.join(constant)}")
    if any(k in VERDICT_COLUMNS for k in extra):
        table.append("test_vs_*: the test verdict on eval.metric against that forecaster (better / worse / n.s. = "
                     f"no significant difference at 5%, Diebold-Mariano; too few = under {MIN_DATES} origin dates); "
                     "the order is the objective's alone")
    return "\n".join(table)


_NOTHING_DUE: list[str] = []  # why a sweeper of this process launched no job, on purpose


def nothing_due(reason: str) -> None:
    """A sweeper launched no job because none was due (its study holds its ``n_trials``
    already): the sweep run then ends FINISHED, not as a sweep that failed to start."""
    _NOTHING_DUE.append(reason)
    log.warning("%s", reason)


def pareto_front(rows: list[dict[str, Any]], directions: list[str]) -> set[int]:
    """The jobs no other job beats on every objective (better on one, as good on the rest)."""
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    scored = {r["job"]: [s * v for s, v in zip(signs, r["objective"])] for r in rows
              if isinstance(r["objective"], list) and all(math.isfinite(v) for v in r["objective"])}

    def beaten(a: list[float]) -> bool:
        return any(all(x <= y for x, y in zip(b, a)) and b != a for b in scored.values())
    return {job for job, values in scored.items() if not beaten(values)}


class SweepRun:
    """A sweep's parent run in MLflow, from the multirun's start (``start``) to its end (``end``)."""

    def __init__(self, tracker: Tracker, run_id: str, directions: list[str], sweep_id: str,
                 study: str | None = None) -> None:
        self.tracker, self.run_id, self.directions, self.sweep_id = tracker, run_id, directions, sweep_id
        self.study = study  # a stored Optuna study this sweep searches in: the UI view shows all its trials
        self.maximise = directions[0] == "maximize"  # the order of the table: by the first objective
        self.open = True  # until ended, or left to end later

    @classmethod
    def start(cls, settings: MlflowConfig, directions: list[str], overrides: list[str],
              study: str | None = None) -> "SweepRun":
        """Create the sweep run in the store ``settings`` name and hand its id to the jobs;
        ``directions``: each objective's (the first orders the table); ``overrides``: the command
        line's; ``study``: the stored Optuna study it searches in, if any."""
        # Creating the store here also runs its migrations once, before parallel jobs open it.
        tracker = Tracker.from_settings(settings)
        sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
        run = tracker.client.create_run(
            tracker.experiment_id, run_name=sweep_id,
            tags={"sweep_id": sweep_id, "kind": "sweep", "overrides": mask_passwords(" ".join(overrides)),
                  **process_tags()})
        sweep = cls(tracker, run.info.run_id, directions, sweep_id, study)
        os.environ[PARENT_RUN_ENV], os.environ[SWEEP_ID_ENV] = sweep.run_id, sweep_id
        atexit.register(sweep.close_at_exit)  # the sweep died before it ended
        log.info("MLflow sweep run %s (%s) in %s", sweep.run_id, sweep_id, tracker.shown_uri)
        return sweep

    def end(self) -> None:
        """Log the job table (best first), close the run, and exit non-zero if a job did not finish;
        with the tracking server lost, one line naming the jobs that failed on this machine."""
        try:
            rows = self._summarise()
        except Exception:
            if not self.server_lost():
                raise  # (Hydra warns with its message; the run is closed at exit)
            raise SystemExit(error_line(self._lost())) from None
        if not rows and _NOTHING_DUE:
            return  # the sweeper said why (a stored study that holds its n_trials already)
        if not rows:
            # A sweeper that stopped before its first job (a config that does not compose, say).
            # Hydra may call this while that error is on its way up: then let it through.
            if sys.exc_info()[0] is None:
                raise SystemExit(error_line("the sweep ended without running a job; see the messages above"))
            return
        failed = [r for r in rows if r["status"] not in ("FINISHED", *SEARCH_STOPS.values())]
        for row in failed:
            if NOT_REQUEUED_TAG in row:
                log.warning("job %d: %s", row["job"], row[NOT_REQUEUED_TAG])
        if failed:
            raise SystemExit(error_line(f"{len(failed)} of {len(rows)} sweep jobs did not finish (jobs "
                                        f"{', '.join(str(r['job']) for r in failed)}); their errors are printed above"))

    def _lost(self) -> str:
        """The sweep run left to end later, and the line that names the jobs that failed."""
        uri = self.tracker.shown_uri
        failed = self.left_to_end_later(f"the MLflow tracking server at {uri} was lost during the sweep")
        jobs = (f"{len(failed)} of its jobs did not finish (jobs {', '.join(map(str, failed))}; their errors are "
                "printed above)" if failed else "its summary could not be recorded")
        return (f"lost the MLflow tracking server at {uri} during sweep {self.sweep_id}: {jobs}; the next command on "
                "this store marks the sweep run FAILED once the server answers again")

    def _summarise(self) -> list[dict[str, Any]]:
        """Log and save the job table, close the run; the job rows."""
        rows = self.job_rows()
        table = _format_table(rows)
        self.save_ui_view(rows)
        shown = f" (every trial of study '{self.study}', across its searches)" if self._study_filter() else ""
        log.info("sweep %s: %d jobs, best first\n%s\nopen the MLflow UI%s: %s", self.sweep_id,
                 len(rows), table, shown, self.tracker.ui_command(view=self.sweep_id))
        client = self.tracker.client
        client.log_text(self.run_id, table + "\n", "sweep_summary.txt")
        client.log_dict(self.run_id, rows, "sweep_summary.json")
        finished = [r for r in rows if r["objective"] != "" and r["status"] == "FINISHED"]
        if finished:
            best = finished[0]["objective"]
            client.log_metric(self.run_id, "best_objective", best[0] if isinstance(best, list) else best)
            client.set_tag(self.run_id, "best_job", str(finished[0]["job"]))
        failed = [r for r in rows if r["status"] not in ("FINISHED", *SEARCH_STOPS.values())]
        self.close("FAILED" if failed or not (rows or _NOTHING_DUE) else "FINISHED")
        return rows

    def _study_filter(self) -> str | None:
        """The runs of every trial of this sweep's stored study (a name a filter can quote), else None."""
        if not self.study or "'" in self.study or "\\" in self.study:
            return None
        return f"tags.optuna_study = '{self.study}'"

    def save_ui_view(self, rows: list[dict[str, Any]]) -> None:
        """Save the MLflow UI's view of this sweep (key: its sweep id): its job runs (in a stored Optuna
        study, every trial's of the study, this sweep's and earlier ones'), best first, with the
        swept parameters, the objective and the eval columns of the table as columns."""
        metrics = ["objective", *(k for k in EVAL_COLUMNS if any(k in r for r in rows))]
        params = [k.lstrip("+~") for k in split_overrides(rows)[0]]
        columns = [*(column("metrics", k) for k in metrics), *(column("params", k) for k in params),
                   column("attributes", "Duration")]
        save_runs_view(self.tracker.client, self.tracker.experiment_id, self.sweep_id,
                       self._study_filter() or f"tags.sweep_id = '{self.sweep_id}' and tags.job_num LIKE '%'", columns,
                       column("metrics", "objective"), not self.maximise)

    def job_rows(self) -> list[dict[str, Any]]:
        """One row per job of this sweep, best objective first (unfinished jobs last). A job that ran
        again (requeued by SLURM) is its newest run."""
        runs = self.tracker.client.search_runs([self.tracker.experiment_id],
                                               filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
                                               order_by=["attributes.start_time ASC"])
        newest = {r.data.tags.get("job_num", r.info.run_id): r for r in runs}
        rows = []
        for r in newest.values():
            end = r.info.end_time or r.info.start_time
            # The job's own measure (its "done in"), else the run's wall time (a job that failed).
            seconds = r.data.metrics.get("duration_s", (end - r.info.start_time) / 1000)
            several = [r.data.metrics[f"objective_{i}"] for i in range(len(self.directions))
                       if f"objective_{i}" in r.data.metrics]
            stopped = next((status for tag, status in SEARCH_STOPS.items() if r.data.tags.get(tag) == "true"), None)
            rows.append({"job": int(r.data.tags.get("job_num", -1)),
                         "objective": "" if stopped else several or r.data.metrics.get("objective", ""),
                         "duration_s": round(seconds, 1), "status": stopped or r.info.status,
                         "overrides": r.data.tags.get("overrides", ""), "run_id": r.info.run_id,
                         **{k: r.data.metrics[k] for k in EVAL_COLUMNS if k in r.data.metrics},
                         **{k: r.data.tags[k] for k in (*VERDICT_COLUMNS, NOT_REQUEUED_TAG) if k in r.data.tags}})
        sign = -1.0 if self.maximise else 1.0
        front = pareto_front(rows, self.directions) if len(self.directions) > 1 else set()
        for row in rows if front else ():
            row["pareto"] = "*" if row["job"] in front else ""

        def rank(row: dict[str, Any]) -> tuple:
            value = row["objective"][0] if isinstance(row["objective"], list) else row["objective"]
            unranked = value == "" or math.isnan(value)  # failed, or an undefined metric (a constant's IC)
            return unranked, row.get("pareto") != "*", 0.0 if unranked else sign * value, row["job"]

        return sorted(rows, key=rank)

    def _running_children(self, run_id: str):
        return self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'")

    def close(self, status: str) -> None:
        """End the sweep run, and any job or phase run whose process died without ending it
        (a launcher that kills its workers when one job fails, say) as KILLED."""
        client = self.tracker.client
        for job in self._running_children(self.run_id):
            for phase in self._running_children(job.info.run_id):
                client.set_terminated(phase.info.run_id, "KILLED")
            client.set_terminated(job.info.run_id, "KILLED")
        if client.get_run(self.run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(self.run_id, status)
        self._forget()

    def close_at_exit(self) -> None:
        """End a sweep that did not end (its sweeper stopped on an error, printed already) FAILED;
        quietly, whether or not the tracking server still answers."""
        if not self.open:
            return
        try:
            self.close("FAILED")
        except Exception as err:
            with contextlib.suppress(OSError):
                self.left_to_end_later(f"the sweep stopped early, and its run could not be ended ({first_line(err)})")
            log.warning("sweep run %s: the next command on this store marks it FAILED", self.run_id)

    def server_lost(self) -> bool:
        return is_remote(self.tracker.tracking_uri) and not server_answers(self.tracker.tracking_uri)

    def left_to_end_later(self, why: str) -> list[int]:
        """Record the sweep run to end FAILED, with ``why``, once the server answers (tracking/stale.py:
        the next command on this store ends it); the jobs that noted here that they failed."""
        record_unended(unended_folder(self.tracker.tracking_uri), Unended(self.run_id, "FAILED", mask_passwords(why)))
        folder = failed_jobs_folder(self.tracker.tracking_uri, self.run_id)
        failed = sorted(int(p.stem) for p in folder.glob("*.txt") if p.stem.isdigit())
        self._forget()
        return failed

    def _forget(self) -> None:
        """Nothing of the ended sweep stays: a later run in this process or shell must not nest
        under it; its jobs' notes (``note_failed_job``) have served."""
        self.open = False
        notes = failed_jobs_folder(self.tracker.tracking_uri, self.run_id)
        shutil.rmtree(notes, ignore_errors=True)
        with contextlib.suppress(OSError):  # unless another sweep's notes are there
            notes.parent.rmdir()
        if os.environ.get(PARENT_RUN_ENV) == self.run_id:
            os.environ.pop(PARENT_RUN_ENV, None)
            os.environ.pop(SWEEP_ID_ENV, None)
