"""Runs left RUNNING: by a process that died without closing them (kill -9, out of memory, power),
or by one that could not end them because the tracking server did not answer.

Every job and phase run carries the host and pid of its process; a later invocation on the same
store finds this host's RUNNING runs whose process is gone and ends them FAILED. A process that
cannot end a run writes down how it ended (status and reason) in a local record, one JSON file
per run; whoever next reaches the server (the same process, or a later invocation on this store)
ends it as it happened.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ..outputs import outputs_root
from .resume import RESUMED_BY_TAG
from .uris import sqlite_path

HOST_TAG = "kronos_exp.host"
PID_TAG = "kronos_exp.pid"
REASON_TAGS = {"FAILED": "error", "KILLED": "stopped"}  # the tag that says why a run ended so

log = logging.getLogger(__name__)


def process_tags() -> dict[str, str]:
    """The tags that let a later invocation tell whether this run's process still lives."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_alive(pid: int) -> bool:
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
    return [r for r in runs if r.data.tags.get(PID_TAG, "").isdigit() and not process_alive(int(r.data.tags[PID_TAG]))]


def find_taken_over_jobs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """RUNNING job runs, on any host, whose phase another job took over once its heartbeat stopped."""
    return client.search_runs([experiment_id], max_results=1000,
                              filter_string=f"attributes.status = 'RUNNING' and tags.`{RESUMED_BY_TAG}` != ''")


def mark_dead_runs_failed(client: MlflowClient, experiment_id: str) -> list[Run]:
    """End every run ``find_dead_runs`` or ``find_taken_over_jobs`` returns as FAILED, with the
    reason as its ``error`` tag."""
    dead = {r.info.run_id: r for r in find_dead_runs(client, experiment_id)}
    for run in dead.values():
        end(client, Unended(run.info.run_id, "FAILED", f"process {run.data.tags[PID_TAG]} on "
                            f"{run.data.tags[HOST_TAG]} ended without closing this run (killed?); marked FAILED "
                            "by a later invocation"))
    for run in find_taken_over_jobs(client, experiment_id):
        if run.info.run_id not in dead:
            end(client, Unended(run.info.run_id, "FAILED", f"its phase was taken over by run "
                                f"{run.data.tags[RESUMED_BY_TAG]} after its heartbeat stopped (process "
                                f"{run.data.tags.get(PID_TAG, '?')} on {run.data.tags.get(HOST_TAG, '?')} lost)"))
            dead[run.info.run_id] = run
    return list(dead.values())


@dataclass(frozen=True)
class Unended:
    """A run its process could not end: the status it ended with, and why."""
    run_id: str
    status: str
    reason: str = ""


def unended_folder(tracking_uri: str) -> Path:
    """Where this machine keeps the runs of ``tracking_uri`` still to end: beside a SQLite store,
    else under ./outputs (where the default store is), one folder per server."""
    database = sqlite_path(tracking_uri)
    if database is not None:
        return database.resolve().parent / "unended_runs"
    name = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return outputs_root() / "unended_runs" / name


_recorded_here: set[str] = set()  # runs this process recorded and has not ended since


def left_unended() -> bool:
    """Whether this process left runs it could not end (they are recorded, to end later)."""
    return bool(_recorded_here)


def runs_ended(status: str) -> str:
    """What became of this process's runs, truly: ended ``status``, or recorded to end later."""
    if not left_unended():
        return f"the MLflow runs are marked {status}"
    return (f"the MLflow runs could not be marked {status} (the tracking server did not answer); the next "
            "invocation on this store marks them")


def record_unended(folder: Path, run: Unended) -> None:
    """Write ``run`` down, atomically (a reader sees the whole record or none)."""
    _recorded_here.add(run.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(run), f)
        os.replace(tmp, folder / f"{run.run_id}.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def end(client: MlflowClient, run: Unended) -> None:
    """End ``run`` with its status, its reason as a tag; raises when the server does not answer."""
    if run.reason and run.status in REASON_TAGS:
        client.set_tag(run.run_id, REASON_TAGS[run.status], run.reason)
    client.set_terminated(run.run_id, run.status)


def end_recorded(client: MlflowClient, folder: Path, mine_only: bool = False) -> list[Unended]:
    """End the recorded runs (with ``mine_only``, those this process recorded) that are still
    RUNNING, and drop their records; stops at the first the server does not take. Returns those
    ended now."""
    ended = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if mine_only and path.stem not in _recorded_here:
            continue
        try:
            run = Unended(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:
            log.warning("ignoring %s, not a record of a run to end (%s); delete it", path, err)
            continue
        try:
            if client.get_run(run.run_id).info.status == "RUNNING":
                end(client, run)
                ended.append(run)
        except Exception as err:
            if not _gone(err):
                return ended  # the server is away: the records stay for the next try
        path.unlink(missing_ok=True)
        _recorded_here.discard(run.run_id)
    return ended


def _gone(err: Exception) -> bool:
    """Whether the server answered that the run does not exist (deleted meanwhile)."""
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", ""))
