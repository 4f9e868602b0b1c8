"""Runs left RUNNING by a process that died without closing them (kill -9, out of memory, power).

Every job and phase run carries the host and pid of its process; a later invocation on the same
store finds this host's RUNNING runs whose process is gone and ends them FAILED.
"""
from __future__ import annotations

import os
import socket

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

HOST_TAG = "kronos_exp.host"
PID_TAG = "kronos_exp.pid"


def process_tags() -> dict[str, str]:
    """The tags that let a later invocation tell whether this run's process still lives."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def find_dead_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """RUNNING runs of the experiment started on this host by a process that no longer exists."""
    host = socket.gethostname().replace("'", "")
    runs = client.search_runs([experiment_id], max_results=1000,
                              filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'")
    return [r for r in runs if r.data.tags.get(PID_TAG, "").isdigit() and not _alive(int(r.data.tags[PID_TAG]))]


def mark_dead_runs_failed(client: MlflowClient, experiment_id: str) -> list[Run]:
    """End every run ``find_dead_runs`` returns as FAILED, with the reason as its ``error`` tag."""
    dead = find_dead_runs(client, experiment_id)
    for run in dead:
        client.set_tag(run.info.run_id, "error", f"process {run.data.tags[PID_TAG]} on {run.data.tags[HOST_TAG]} "
                       "ended without closing this run (killed?); marked FAILED by a later invocation")
        client.set_terminated(run.info.run_id, "FAILED")
    return dead
