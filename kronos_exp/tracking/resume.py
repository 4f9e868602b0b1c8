"""Finding where an interrupted phase stopped, through the tracking store.

Each invocation writes into a fresh Hydra folder, so a rerun cannot find the ``last`` training
state by path alone. The phase run that trains records it: tag ``last_state`` (the absolute path
of the state file) beside its ``fingerprint``. A later run of the same fingerprint finds the
newest unfinished run (KILLED, FAILED, or RUNNING left behind by a dead process) whose state
file is still there, takes it (``take``: an atomic claim, so two processes never resume the same
run) and continues from it. The state file lives on the disk of the host that wrote it: resuming on another host
needs the output folder on a shared filesystem.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

STATE_TAG = "last_state"
RESUMED_BY_TAG = "resumed_by"
RESUMED_FROM_TAG = "resumed_from"


@dataclass(frozen=True)
class Unfinished:
    run_id: str
    status: str
    state_path: Path


def find_unfinished(client: MlflowClient, experiment_id: str, phase: str, fingerprint: str,
                    alive: Callable[[Run], bool]) -> list[Unfinished]:
    """Unfinished, not yet resumed runs of ``phase`` with ``fingerprint`` whose state file exists
    and whose process is not ``alive`` (still training it), newest first."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.fingerprint = '{fingerprint}' and tags.phase = '{phase}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    found = []
    for run in runs:
        path = run.data.tags.get(STATE_TAG)
        if RESUMED_BY_TAG in run.data.tags or not path or alive(run):
            continue
        if Path(path).is_file():
            found.append(Unfinished(run.info.run_id, run.info.status, Path(path)))
        else:
            log.info("%s: run %s stopped unfinished but its training state %s is gone", phase, run.info.run_id, path)
    return found


def take(client: MlflowClient, old: Unfinished, new_run_id: str) -> bool:
    """Claim ``old`` for resuming by ``new_run_id``; False when another run took it first.

    The claim is a run parameter: MLflow never changes a logged parameter's value (a second,
    different value is refused, by a SQL store or a server alike), so of two processes that found
    the same unfinished run at once exactly one takes it. The tags that follow are for people."""
    try:
        client.log_param(old.run_id, RESUMED_BY_TAG, new_run_id)
    except MlflowException:
        return False
    client.set_tag(old.run_id, RESUMED_BY_TAG, new_run_id)
    parent = client.get_run(old.run_id).data.tags.get("mlflow.parentRunId")
    if parent:  # its other phases are no longer waiting to be taken up
        client.set_tag(parent, RESUMED_BY_TAG, new_run_id)
    if old.status == "RUNNING":  # left so by a dead process
        client.set_terminated(old.run_id, RunStatus.to_string(RunStatus.FAILED))
    return True


def done_in_unfinished_job(client: MlflowClient, experiment_id: str, phase: str, fingerprint: str) -> bool:
    """Whether a job that stopped unfinished, and was not taken up yet, already finished ``phase``
    with ``fingerprint`` (trained or reused it): rerunning that job reuses it, never trains it twice."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.fingerprint = '{fingerprint}' and tags.phase = '{phase}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id is None:
            continue
        try:
            parent = client.get_run(parent_id)
        except MlflowException:
            continue
        if parent.info.status != "FINISHED" and RESUMED_BY_TAG not in parent.data.tags:
            return True
    return False
