"""Finding where an interrupted phase stopped, through the tracking store.

Each invocation writes into a fresh Hydra folder, so a rerun cannot find the ``last`` training
state by path alone. The phase run that trains records it: tag ``last_state`` (the absolute path
of the state file, ``<its run folder>/checkpoints/<phase>.last.safetensors``) beside its
``fingerprint``, and tag ``last_state_sha256`` (the digests of the newest state it wrote and of
the one before, recorded before each new file replaces the old). A later run of the same
fingerprint finds the newest unfinished run (KILLED, FAILED, or RUNNING left behind by a dead
process) whose state file is still there, takes it (``take``: an atomic claim, so two processes
never resume the same run), checks it (``state_problem``: the file sits where a phase run keeps
its state and holds the bytes its run recorded; a tag that points elsewhere, or a file truncated
or altered since, is refused and the run is marked ``state_refused``, never offered again) and
continues from it. The state file lives on the disk of the host that wrote it: resuming on
another host needs the output folder on a shared filesystem.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..data.digest import file_sha256
from .fingerprint import fingerprint_filter

log = logging.getLogger(__name__)

STATE_TAG = "last_state"
STATE_SHA_TAG = "last_state_sha256"  # "<newest> <previous>": the states its run wrote last
STATE_REFUSED_TAG = "state_refused"  # why a run's state was not resumed
STATE_SUFFIX = ".last.safetensors"
RESUMED_BY_TAG = "resumed_by"
RESUMED_FROM_TAG = "resumed_from"


@dataclass(frozen=True)
class Unfinished:
    run_id: str
    status: str
    state_path: Path
    digests: tuple[str, ...] = ()  # what its run recorded (STATE_SHA_TAG)


def find_unfinished(client: MlflowClient, experiment_id: str, phase: str, fingerprint: str,
                    alive: Callable[[Run], bool]) -> list[Unfinished]:
    """Unfinished, not yet resumed runs of ``phase`` with ``fingerprint`` whose state file exists
    and whose process is not ``alive`` (still training it), newest first."""
    runs = client.search_runs(
        [experiment_id],
        f"{fingerprint_filter(fingerprint)} and tags.phase = '{phase}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    found = []
    for run in runs:
        path = run.data.tags.get(STATE_TAG)
        if RESUMED_BY_TAG in run.data.tags or not path or alive(run):
            continue
        if Path(path).is_file():
            digests = tuple(run.data.tags.get(STATE_SHA_TAG, "").split())
            found.append(Unfinished(run.info.run_id, run.info.status, Path(path), digests))
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


def state_file(run_folder: Path, phase: str) -> Path:
    """Where a phase run keeps its ``last`` training state, beside its best checkpoint."""
    return run_folder / "checkpoints" / f"{phase}{STATE_SUFFIX}"


def state_problem(old: Unfinished, phase: str) -> str | None:
    """Why ``old``'s state file must not be resumed (None: it is what its run saved, where it saves).

    A tag is only a claim: the file must be ``<a run folder>/checkpoints/<phase>.last.safetensors``
    itself (no link), and its sha256 one that its run recorded when it wrote it."""
    path = old.state_path
    if not path.is_absolute() or path.is_symlink() or path != state_file(path.parent.parent, phase).resolve():
        return f"its {STATE_TAG} tag points at {path}, not at a run folder's checkpoints/{phase}{STATE_SUFFIX}"
    if not old.digests:
        return f"its run recorded no sha256 of {path}"
    actual = file_sha256(path)
    if actual not in old.digests:
        return (f"{path} is not the file its run saved (sha256 {actual[:12]}, recorded {old.digests[0][:12]}): "
                "truncated, altered or replaced since")
    return None


def refuse(client: MlflowClient, old: Unfinished, phase: str, problem: str) -> None:
    """Mark ``old`` (already taken) as refused and say so once: it is never offered again."""
    client.set_tag(old.run_id, STATE_REFUSED_TAG, problem[:5000])
    log.warning("%s: not resuming run %s: %s; it is not offered again, and this phase trains from the start",
                phase, old.run_id, problem)


def lineage(client: MlflowClient, run_id: str, limit: int = 100) -> list[str]:
    """``run_id`` and the runs it resumed from (``resumed_from``), transitively, newest first."""
    chain = [run_id]
    while len(chain) < limit:
        previous = client.get_run(chain[-1]).data.tags.get(RESUMED_FROM_TAG)
        if not previous or previous in chain:
            break
        chain.append(previous)
    return chain


def done_in_unfinished_job(client: MlflowClient, experiment_id: str, phase: str, fingerprint: str) -> bool:
    """Whether a job that stopped unfinished, and was not taken up yet, already finished ``phase``
    with ``fingerprint`` (trained or reused it): rerunning that job reuses it, never trains it twice."""
    runs = client.search_runs(
        [experiment_id],
        f"{fingerprint_filter(fingerprint)} and tags.phase = '{phase}' and attributes.status = 'FINISHED'",
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
