"""Finding where an interrupted phase stopped, through the tracking store, and resuming only
what this user's own runs wrote.

Each invocation writes into a fresh Hydra folder, so a rerun cannot find the ``last`` training
state by path alone. The phase run that trains records it: tag ``last_state`` (the absolute path
of the state file, ``<its run folder>/checkpoints/<phase>.last.safetensors``) beside its
``fingerprint``; tag ``last_state_hmac`` signs the newest state it wrote and the one before, and
``best_hmac`` its newest best checkpoint and the one before (tracking/signatures.py: an HMAC under
this user's key, over the run, fingerprint, phase, path and sha256, each recorded before the new
file replaces the old). A later run of the same fingerprint finds the newest unfinished run
(KILLED, FAILED, or RUNNING left behind by a dead process) whose state file is still there, takes
it (``take``: an atomic claim, so two processes never resume the same run), checks it
(``resumable``: the state is a regular file of this user's where a phase run keeps its state, and
it and the best checkpoint beside it carry this user's signature; anything else is refused and the
run marked ``state_refused``, never offered again) and continues from it, copying only the signed
files of the best checkpoint, checked again as they are copied, never through a link. The state
file lives on the disk of the host that wrote it: resuming on another host needs the output
folder on a shared filesystem, and the key in a home folder both hosts share.

A requeued SLURM job's attempt continues its job run; a phase of it then continues its own phase
run (``continuable``, then ``take_back``: the same search, the same checks and the same atomic
claim, for the run itself) rather than resume it in a new one, and counts the attempts it trained in
(``slurm_attempts``). The claim is a parameter per attempt (``claim_param``): a later rerun can
still take a phase run that attempts continued.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..data.digest import stream_sha256
from ..model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, move_into_place, staging_folder
from .fingerprint import fingerprint_filter
from .signatures import KeyUnusable, key_path, sign, signed_by_me

log = logging.getLogger(__name__)

STATE_TAG = "last_state"
STATE_MAC_TAG = "last_state_hmac"  # "<newest> <previous>": signatures of the states its run wrote last
BEST_MAC_TAG = "best_hmac"  # "<newest> <previous>": signatures of the best checkpoints it saved last
BEST_FILES = (CONFIG_NAME, WEIGHTS_NAME)  # what a resume takes from a best checkpoint (packaging adds the rest)
STATE_REFUSED_TAG = "state_refused"  # why a run's state was not resumed
STATE_SUFFIX = ".last.safetensors"
RESUMED_BY_TAG = "resumed_by"
RESUMED_FROM_TAG = "resumed_from"
# On a job run a requeued SLURM job continued, and on each phase run its attempts continued: how many
# attempts it ran in (a phase run's claim parameter follows it: ``claim_param``).
ATTEMPTS_TAG = "slurm_attempts"


@dataclass(frozen=True)
class Unfinished:
    run_id: str
    status: str
    state_path: Path
    fingerprint: str
    state_macs: tuple[str, ...] = ()  # what its run recorded (STATE_MAC_TAG)
    best_macs: tuple[str, ...] = ()  # (BEST_MAC_TAG)
    attempts: int = 1  # the attempts of a requeued job it trained in so far (ATTEMPTS_TAG)

    @property
    def best_dir(self) -> Path:
        """Where its run kept its best checkpoint: beside the state, named after the phase."""
        return self.state_path.parent / self.state_path.name[:-len(STATE_SUFFIX)]


class NotResumable(Exception):
    """Why an unfinished run's files must not be resumed (the message says it)."""


def state_fields(run_id: str, fingerprint: str, phase: str, path: Path, sha256: str) -> tuple[str, ...]:
    """What a training state's signature covers: which run wrote which file, for what."""
    return "state", run_id, fingerprint, phase, str(path), sha256


def best_fields(run_id: str, fingerprint: str, phase: str, digests: dict[str, str]) -> tuple[str, ...]:
    """What a best checkpoint's signature covers (``digests``: sha256 of its BEST_FILES)."""
    return "best", run_id, fingerprint, phase, json.dumps(digests, sort_keys=True)


def find_unfinished(client: MlflowClient, experiment_id: str, phase: str, fingerprint: str,
                    alive: Callable[[Run], bool], parent: str | None = None) -> list[Unfinished]:
    """Unfinished, not yet resumed runs of ``phase`` with ``fingerprint`` (nested in job run
    ``parent`` when given) whose state file exists and whose process is not ``alive`` (still
    training it), newest first."""
    nested = f" and tags.mlflow.parentRunId = '{parent}'" if parent else ""
    runs = client.search_runs(
        [experiment_id],
        f"{fingerprint_filter(fingerprint)} and tags.phase = '{phase}' and attributes.status != 'FINISHED'{nested}",
        order_by=["attributes.start_time DESC"], max_results=20)
    found = []
    for run in runs:
        path = run.data.tags.get(STATE_TAG)
        if RESUMED_BY_TAG in run.data.tags or not path or alive(run):
            continue
        if Path(path).is_file():
            tags = run.data.tags
            found.append(Unfinished(run.info.run_id, run.info.status, Path(path), fingerprint,
                                    tuple(tags.get(STATE_MAC_TAG, "").split()),
                                    tuple(tags.get(BEST_MAC_TAG, "").split()), _attempts(tags)))
        else:
            log.info("%s: run %s stopped unfinished but its training state %s is gone", phase, run.info.run_id, path)
    return found


def _attempts(tags: dict[str, str]) -> int:
    try:
        return max(1, int(tags.get(ATTEMPTS_TAG, "1")))
    except ValueError:  # a mangled tag: counted from one
        return 1


def claim_param(attempts: int) -> str:
    """The parameter that claims a run which has trained in ``attempts`` attempts: ``resumed_by``,
    then one per continuation, so that each attempt's run can be claimed once again."""
    return RESUMED_BY_TAG if attempts <= 1 else f"{RESUMED_BY_TAG}.attempt{attempts}"


def take(client: MlflowClient, old: Unfinished, new_run_id: str) -> bool:
    """Claim ``old`` for resuming by ``new_run_id``; False when another run took it first.

    The claim is a run parameter: MLflow never changes a logged parameter's value (a second,
    different value is refused, by a SQL store or a server alike), so of two processes that found
    the same unfinished run at once exactly one takes it. The tags that follow are for people."""
    if not _claim(client, old, new_run_id):
        return False
    client.set_tag(old.run_id, RESUMED_BY_TAG, new_run_id)
    if old.status == "RUNNING":  # left so by a dead process
        client.set_terminated(old.run_id, RunStatus.to_string(RunStatus.FAILED))
    return True


def take_back(client: MlflowClient, old: Unfinished) -> bool:
    """Claim ``old`` for itself, to continue in a requeued job's attempt; False when another run
    took it first. The same parameter as ``take``'s, so that only one of them wins; no tag (its run
    goes on, and is offered again should this attempt stop too)."""
    return _claim(client, old, old.run_id)


def _claim(client: MlflowClient, old: Unfinished, run_id: str) -> bool:
    try:
        client.log_param(old.run_id, claim_param(old.attempts), run_id)
    except MlflowException:
        return False
    return True


def continuable(client: MlflowClient, experiment_id: str, job_run_id: str, phase: str, fingerprint: str,
                alive: Callable[[Run], bool]) -> tuple[Unfinished, dict[str, str]] | None:
    """The phase run an earlier attempt of job run ``job_run_id`` left unfinished with
    ``fingerprint``, taken back (``take_back``) once its files passed every check of ``resumable``
    (its ``state_macs``: the signature of the state it continues from), and the best checkpoint files
    to keep; None when there is none, none passes (a new phase run then takes and refuses it as any
    rerun would) or another run took it first."""
    for unfinished in find_unfinished(client, experiment_id, phase, fingerprint, alive, parent=job_run_id):
        try:
            state_mac, best = _checked(unfinished, phase)
        except NotResumable as problem:
            log.info("%s: not continuing run %s of this job: %s", phase, unfinished.run_id, problem)
            continue
        if take_back(client, unfinished):  # its state's signature first: the one its next state keeps
            return replace(unfinished, state_macs=(state_mac,)), best
    return None


def finished_in_job(client: MlflowClient, experiment_id: str, job_run_id: str, phase: str, fingerprint: str) -> bool:
    """Whether an earlier attempt of job run ``job_run_id`` finished ``phase`` with ``fingerprint``
    (trained and registered it, or reused a registered version)."""
    return bool(client.search_runs(
        [experiment_id], f"{fingerprint_filter(fingerprint)} and tags.phase = '{phase}' and attributes.status = "
        f"'FINISHED' and tags.mlflow.parentRunId = '{job_run_id}'", max_results=1))


def taken_up(client: MlflowClient, old: Unfinished, new_run_id: str) -> None:
    """``old`` is resumed: its job's other phases are no longer waiting to be taken up. Only once
    its files were found to be this user's: the job a planted run names is anyone's. Not when that
    job is the one ``new_run_id`` runs in (a requeued job's continued run: it lives)."""
    parent = client.get_run(old.run_id).data.tags.get("mlflow.parentRunId")
    if parent and parent != client.get_run(new_run_id).data.tags.get("mlflow.parentRunId"):
        client.set_tag(parent, RESUMED_BY_TAG, new_run_id)


def state_file(run_folder: Path, phase: str) -> Path:
    """Where a phase run keeps its ``last`` training state, beside its best checkpoint."""
    return run_folder / "checkpoints" / f"{phase}{STATE_SUFFIX}"


def resumable(old: Unfinished, phase: str) -> dict[str, str]:
    """The sha256 of the best checkpoint files to take from ``old`` (none before its first
    validation), once its state and those files are checked to be what this user's run signed;
    ``NotResumable`` saying why not. A tag is only a claim: the state must be
    ``<a run folder>/checkpoints/<phase>.last.safetensors`` itself, a regular file of this user's."""
    return _checked(old, phase)[1]


def _checked(old: Unfinished, phase: str) -> tuple[str, dict[str, str]]:
    """``resumable``'s checks: the signature its state file carries, and its best checkpoint's digests."""
    path = old.state_path
    if not path.is_absolute() or path.is_symlink() or path != state_file(path.parent.parent, phase).resolve():
        raise NotResumable(f"its {STATE_TAG} tag points at {path}, not at a run folder's checkpoints/{phase}{STATE_SUFFIX}")
    try:
        fields = state_fields(old.run_id, old.fingerprint, phase, path, _sha256(path))
        if not old.state_macs or not signed_by_me(old.state_macs, *fields):
            raise NotResumable(f"{path} is not a training state this user's runs signed (key {key_path()}): written "
                               "by another user or key, altered since, or its tags were set by someone else")
        best = _best_digests(old.best_dir)
        if best and not signed_by_me(old.best_macs, *best_fields(old.run_id, old.fingerprint, phase, best)):
            raise NotResumable(f"the best checkpoint {old.best_dir} is not one this user's runs signed "
                               f"(key {key_path()}): written by another user or key, or altered since")
        return sign(*fields), best
    except KeyUnusable as err:
        raise NotResumable(f"resuming needs a key only you can read: {err}") from None


def _open_own_file(path: Path) -> int:
    """A descriptor of ``path`` when it is a regular file of this user's, reached through no link at its end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        raise NotResumable(f"{path} cannot be opened as a file ({err.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise NotResumable(f"{path} is not a regular file of this user's")
    return fd


def _sha256(path: Path) -> str:
    with os.fdopen(_open_own_file(path), "rb") as handle:
        return stream_sha256(handle)


def _best_digests(folder: Path) -> dict[str, str]:
    """sha256 of the files a resume takes from the best checkpoint ``folder`` ({} when there is none)."""
    if not folder.exists() and not folder.is_symlink():
        return {}
    if folder.is_symlink() or not folder.is_dir():
        raise NotResumable(f"the best checkpoint {folder} is not a folder")
    return {name: _sha256(folder / name) for name in BEST_FILES}


def copy_best(old: Unfinished, digests: dict[str, str], target: Path) -> None:
    """Put the checked best checkpoint files of ``old`` at ``target`` (which may be the same folder:
    a requeued job's), each hashed as it is copied; a file that changed since its check is a
    ``CheckpointError`` and ``target`` is left as it was."""
    staging = staging_folder(target)
    try:
        for name, expected in digests.items():
            source = old.best_dir / name
            digest = hashlib.sha256()
            with os.fdopen(_open_own_file(source), "rb") as src, open(staging / name, "wb") as dst:
                while block := src.read(1 << 24):
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != expected:
                raise CheckpointError(f"{source} changed while it was copied to resume from it; nothing of it is used")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    move_into_place(staging, target)


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
