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
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import RunStatus

from ..errors import error_line
from ..metric_names import MIN_DATES, SHORT_VERDICTS
from ..redact import mask_passwords
from ..schemas import MlflowConfig
from .runs import PARENT_RUN_ENV, Tracker
from .stale import process_tags
from .ui import column, save_runs_view

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


def record_failed_job(settings: MlflowConfig, job: JobInfo, message: str) -> None:
    """A sweep job that failed before its MLflow run started (a bad setting for that job) still gets
    a FAILED run under the sweep, so the sweep's summary counts it and the sweep exits non-zero."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if not job.multirun or not parent:
        return
    client = Tracker.from_settings(settings).client
    experiment_id = client.get_run(parent).info.experiment_id
    mine = f"tags.mlflow.parentRunId = '{parent}' and tags.job_num = '{job.num}'"
    if client.search_runs([experiment_id], filter_string=mine):
        return  # its run exists and was ended FAILED by the run itself
    run = client.create_run(experiment_id, run_name=job.run_name,
                            tags={**job.tags(), "mlflow.parentRunId": parent, "error": message[:5000], **process_tags()})
    client.set_terminated(run.info.run_id, "FAILED")


NOT_REQUEUED_TAG = "not_requeued"  # on a job run SLURM stopped for good: why, and how to resume


def record_job_tag(settings: MlflowConfig, job_num: int, key: str, value: str) -> None:
    """Set a tag on the newest run of this sweep's job ``job_num`` (after the job's own run ended)."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent:
        return
    client = Tracker.from_settings(settings).client
    runs = client.search_runs([client.get_run(parent).info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.job_num = '{job_num}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs:
        client.set_tag(runs[0].info.run_id, key, value[:5000])


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

    def __init__(self, tracker: Tracker, run_id: str, directions: list[str], sweep_id: str) -> None:
        self.tracker, self.run_id, self.directions, self.sweep_id = tracker, run_id, directions, sweep_id
        self.maximise = directions[0] == "maximize"  # the order of the table: by the first objective

    @classmethod
    def start(cls, settings: MlflowConfig, directions: list[str], overrides: list[str]) -> "SweepRun":
        """Create the sweep run in the store ``settings`` name and hand its id to the jobs;
        ``directions``: each objective's (the first orders the table); ``overrides``: the command line's."""
        # Creating the store here also runs its migrations once, before parallel jobs open it.
        tracker = Tracker.from_settings(settings)
        sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
        run = tracker.client.create_run(
            tracker.experiment_id, run_name=sweep_id,
            tags={"sweep_id": sweep_id, "kind": "sweep", "overrides": mask_passwords(" ".join(overrides)),
                  **process_tags()})
        sweep = cls(tracker, run.info.run_id, directions, sweep_id)
        os.environ[PARENT_RUN_ENV], os.environ[SWEEP_ID_ENV] = sweep.run_id, sweep_id
        atexit.register(sweep.close, "FAILED")  # the sweep died before it ended
        log.info("MLflow sweep run %s (%s) in %s", sweep.run_id, sweep_id, tracker.shown_uri)
        return sweep

    def end(self) -> None:
        """Log the job table (best first), close the run, and exit non-zero if a job did not finish."""
        rows = self.job_rows()
        table = _format_table(rows)
        self.save_ui_view(rows)
        log.info("sweep %s: %d jobs, best first\n%s\nopen the MLflow UI: %s", self.sweep_id,
                 len(rows), table, self.tracker.ui_command(view=self.sweep_id))
        client = self.tracker.client
        client.log_text(self.run_id, table + "\n", "sweep_summary.txt")
        client.log_dict(self.run_id, rows, "sweep_summary.json")
        finished = [r for r in rows if r["objective"] != "" and r["status"] == "FINISHED"]
        if finished:
            best = finished[0]["objective"]
            client.log_metric(self.run_id, "best_objective", best[0] if isinstance(best, list) else best)
            client.set_tag(self.run_id, "best_job", str(finished[0]["job"]))
        failed = [r for r in rows if r["status"] not in ("FINISHED", "PRUNED")]
        self.close("FAILED" if failed or not (rows or _NOTHING_DUE) else "FINISHED")
        if not rows and _NOTHING_DUE:
            return  # the sweeper said why (a stored study that holds its n_trials already)
        if not rows:
            # A sweeper that stopped before its first job (a config that does not compose, say).
            # Hydra may call this while that error is on its way up: then let it through.
            if sys.exc_info()[0] is None:
                raise SystemExit(error_line("the sweep ended without running a job; see the messages above"))
            return
        for row in failed:
            if NOT_REQUEUED_TAG in row:
                log.warning("job %d: %s", row["job"], row[NOT_REQUEUED_TAG])
        if failed:
            raise SystemExit(error_line(f"{len(failed)} of {len(rows)} sweep jobs did not finish (jobs "
                                        f"{', '.join(str(r['job']) for r in failed)}); their errors are printed above"))

    def save_ui_view(self, rows: list[dict[str, Any]]) -> None:
        """Save the MLflow UI's view of this sweep (key: its sweep id): its job runs, best first, with the
        swept parameters, the objective and the eval columns of the table as columns."""
        metrics = ["objective", *(k for k in EVAL_COLUMNS if any(k in r for r in rows))]
        params = [k.lstrip("+~") for k in split_overrides(rows)[0]]
        columns = [*(column("metrics", k) for k in metrics), *(column("params", k) for k in params),
                   column("attributes", "Duration")]
        save_runs_view(self.tracker.client, self.tracker.experiment_id, self.sweep_id,
                       f"tags.sweep_id = '{self.sweep_id}' and tags.job_num LIKE '%'", columns,
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
            pruned = r.data.tags.get("pruned") == "true"
            rows.append({"job": int(r.data.tags.get("job_num", -1)),
                         "objective": "" if pruned else several or r.data.metrics.get("objective", ""),
                         "duration_s": round(seconds, 1), "status": "PRUNED" if pruned else r.info.status,
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
        # A later run in this process or shell must not nest under the ended sweep.
        if os.environ.get(PARENT_RUN_ENV) == self.run_id:
            os.environ.pop(PARENT_RUN_ENV, None)
            os.environ.pop(SWEEP_ID_ENV, None)
