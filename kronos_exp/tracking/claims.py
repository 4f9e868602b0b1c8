"""Who trains a fingerprint, decided through the tracking store, so jobs on different hosts that
share one ``mlflow server`` train a phase once.

A phase run is a claim on its fingerprint while its ``heartbeat`` tag moves: a background thread
rewrites it every ``interval_s`` until the run ends. A job that finds an earlier live claim on its
fingerprint waits for it to end, then reuses the registered result; when the claim's heartbeat
stops (its process was killed, its host lost), the waiter takes it over: it resumes from the dead
run's ``last`` training state where it can reach the file (tracking/resume.py), else trains afresh.

No host's clock is compared with another's (hosts' clocks drift apart; one a minute ahead took a
live claim): a claim is dead once its heartbeat has not changed for ``STALE_AFTER_BEATS`` of its
intervals of this job's watching (tracking/beats.py), or at once when its process, on this host,
is gone; asked once (``alive``), this job watches another host's claim until its heartbeat tells. A
claim that has begun training comes before any that has not, whatever the start times (stamped by
each host's own clock) say.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from .beats import DEAD, UNSURE, BeatWatch, gone_here
from .fingerprint import fingerprint_filter
from .resume import (STATE_TAG, NotResumable, Unfinished, done_in_unfinished_job, find_unfinished, refuse,
                     resumable, take, taken_up)
from .stale import HOST_TAG, PID_TAG

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "heartbeat"  # the holder's wall clock at its last beat: read only to see it change
HEARTBEAT_EVERY_TAG = "heartbeat_every_s"  # the holder's interval: it is judged by its own, not the observer's
STALE_AFTER_BEATS = 4  # a claim is dead once its heartbeat has not moved for this many of its intervals
SETTLE_S = 0.5  # far longer than a store takes to show a run it has just created (milliseconds)


def _interval(tags: dict[str, str], default: float) -> float:
    try:
        return float(tags[HEARTBEAT_EVERY_TAG])
    except (KeyError, ValueError):  # a run from before the tag, or a mangled one
        return default


class Claims:
    def __init__(self, client: MlflowClient, experiment_id: str, interval_s: float):
        self.client, self.experiment_id, self.interval_s = client, experiment_id, interval_s
        self.watch = BeatWatch(STALE_AFTER_BEATS)

    def verdict(self, run: Run) -> str:
        """ALIVE, UNSURE or DEAD (tracking/beats.py) from what this job saw of ``run`` so far; a
        run that ended, has no heartbeat, or whose process on this host is gone is DEAD at once."""
        tags = run.data.tags
        beat = tags.get(HEARTBEAT_TAG)
        if run.info.status != "RUNNING" or beat is None or gone_here(tags.get(HOST_TAG), tags.get(PID_TAG)):
            return DEAD
        return self.watch.verdict(run.info.run_id, beat, _interval(tags, self.interval_s))

    def alive(self, run: Run) -> bool:
        """Whether ``run`` is a live claim. One of this host whose process lives is; one of another
        host not seen before is watched until its heartbeat moves or has stood still for
        ``STALE_AFTER_BEATS`` of its intervals (one interval's wait when it lives), so that a job
        requeued on another node resumes a lost node's run (tracking/resume.py) after that wait."""
        verdict, here = self.verdict(run), socket.gethostname()
        if verdict == UNSURE and run.data.tags.get(HOST_TAG) != here:
            every = _interval(run.data.tags, self.interval_s)
            log.info("run %s of another host is RUNNING; watching its heartbeat (up to %.0f s) to tell whether "
                     "it lives", run.info.run_id, STALE_AFTER_BEATS * every)
            while verdict == UNSURE:
                time.sleep(min(2.0, max(0.05, every / 4)))
                run = self.client.get_run(run.info.run_id)
                verdict = self.verdict(run)
        return verdict != DEAD

    def first_beat(self) -> dict[str, str]:
        """The heartbeat tags a phase run is created with, beside its fingerprint: a run that holds
        a fingerprint is a live claim from its first moment, so a job started a moment later waits."""
        return {HEARTBEAT_TAG: repr(time.time()), HEARTBEAT_EVERY_TAG: repr(float(self.interval_s))}

    @contextlib.contextmanager
    def heartbeat(self, run_id: str) -> Iterator[None]:
        """Keep ``run_id``'s claim fresh for the duration of the block."""
        self.client.set_tag(run_id, HEARTBEAT_TAG, repr(time.time()))
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.interval_s):
                try:
                    self.client.set_tag(run_id, HEARTBEAT_TAG, repr(time.time()))
                except Exception as err:  # a missed beat is survivable; the next one may pass
                    log.warning("heartbeat of run %s not recorded: %s", run_id, err)

        thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def earlier_live_claims(self, phase: str, fingerprint: str, run_id: str) -> list[Run]:
        """Live claims on ``fingerprint`` that come before ``run_id``: one that has begun training
        (its ``last_state`` tag is set) before any that has not, since a host whose clock is behind
        can start a claim that looks the earlier after another began; else start time, then run id."""
        def order(run: Run) -> tuple:
            return STATE_TAG not in run.data.tags, run.info.start_time, run.info.run_id

        mine = self.client.get_run(run_id)
        runs = self.client.search_runs(
            [self.experiment_id],
            f"{fingerprint_filter(fingerprint)} and tags.phase = '{phase}' and attributes.status = 'RUNNING'",
            max_results=100)
        return [r for r in runs if r.info.run_id != run_id and order(r) < order(mine) and self.verdict(r) != DEAD]

    def wait_for_earlier(self, phase: str, fingerprint: str, run_id: str) -> None:
        """Return once no earlier live claim on ``fingerprint`` is left (ended, or its heartbeat stopped).

        A run is stamped with its start time a moment before the store shows it, so a claim
        started just before this one may not be visible yet at the first look: none is taken as
        none only after a second look ``SETTLE_S`` later."""
        waited, settled = False, False
        while True:
            holders = self.earlier_live_claims(phase, fingerprint, run_id)
            if not holders:
                if settled:
                    return
                settled = True
                time.sleep(SETTLE_S)
                continue
            if not waited:
                log.info("%s: another job is producing fingerprint %s (run %s); waiting for it", phase,
                         fingerprint[:12], holders[0].info.run_id)
                waited = True
            time.sleep(min(self.interval_s, 2.0))


@dataclass(frozen=True)
class Claim:
    """What a phase run should do with its fingerprint: ``resume`` an unfinished run's state,
    ``reuse`` a registered version (when one downloads intact), or ``train`` from the start."""
    action: str  # resume | reuse | train
    unfinished: Unfinished | None = None
    best: dict[str, str] = field(default_factory=dict)  # the checked best checkpoint files to resume with


def claim(claims: Claims, phase: str, fingerprint: str, run_id: str, *, skip_existing: bool,
          resume: bool | None) -> Claim:
    """The reuse policy in one place. With ``skip_existing``, first wait for an earlier live claim
    on the fingerprint; then resume a dead or stopped run of it (unless ``resume=false``), else
    reuse a registered version (with ``skip_existing``, or when rerunning an interrupted job that
    already finished this phase), else train. A taken run whose state file fails its check is
    refused (tracking/resume.py), never resumed."""
    if skip_existing:
        claims.wait_for_earlier(phase, fingerprint, run_id)
    client, experiment_id = claims.client, claims.experiment_id
    if resume is not False:
        for unfinished in find_unfinished(client, experiment_id, phase, fingerprint, alive=claims.alive):
            if not take(client, unfinished, run_id):
                continue
            try:
                best = resumable(unfinished, phase)
            except NotResumable as problem:
                refuse(client, unfinished, phase, str(problem))
                continue
            taken_up(client, unfinished, run_id)
            return Claim("resume", unfinished, best)
    if skip_existing or (resume is not False and done_in_unfinished_job(client, experiment_id, phase, fingerprint)):
        return Claim("reuse")
    return Claim("train")
