"""Who is searching a shared study, so that a rerun continues a killed search while processes
started together each run their own trials.

Every sweep process registers in the study as a worker: a study user attribute
``kronos_worker:<id>`` holding its host, pid, heartbeat interval, a heartbeat it rewrites, whether
it ended, and the finished trials it took over. No worker compares another's heartbeat with its own
clock (hosts' clocks differ: a process ten minutes ahead failed a live worker's trial): a worker is
dead once it ended, at once when its process on this host is gone, or once its heartbeat has not
changed for four of its beats of our watching (kronos_exp/tracking/beats.py). On joining, a process

- watches the other hosts' workers that have not ended until each beats (alive: at most one beat
  of waiting) or stays still for four beats (dead); one of this host whose process lives is alive,
- ends the RUNNING trials of dead workers FAIL (a trial is never left running), and
- inherits the dead workers: it removes each one's registration (of two processes racing for one,
  exactly one removes it: kronos_exp/search/records.py) and counts its finished trials (complete or
  pruned, with what it had inherited itself) towards its own ``n_trials``.

So a search killed during its third of 4 trials and rerun runs 2 more (4 finished in the study),
and two processes started together with ``n_trials=3`` each run 3 (6): a live worker is never
inherited. The study holds one registration per live worker and one per ended worker that no
later process has inherited yet, however often a search is rerun: each rerun folds those of the
ended ones into its own.

While it searches, a worker's heartbeat thread goes on watching: the RUNNING trials of a worker
that stops beating, or whose registration is gone (inherited), end FAIL, and so does a RUNNING
trial nobody owns (its asker was killed before naming itself) that stays so for four beats;
inheriting stays a joiner's business. A worker that was only stalled finds its registration gone at
its next beat (``taken_over``): it registers nothing again, tells nothing of the trials ended
meanwhile (``tell_if_running``), and its sweep stops. Each worker's sampler seed offset (``index``)
is one no other worker holds, whatever the start times its clock stamped say.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..tracking.beats import DEAD, UNSURE, BeatWatch, gone_here
from .records import StudyRecords

log = logging.getLogger(__name__)

WORKER_PREFIX = "kronos_worker:"
OLD_CLAIM_PREFIX = "kronos_inherit:"  # left by kronos_exp before bounded registrations
TRIAL_WORKER_ATTR = "kronos_worker"  # on each trial: the worker that asked for it
FAIL_REASON_ATTR = "fail_reason"  # on a trial that failed of itself (its values, its job): why
RETRY_ATTR = "retry_of"  # on a trial: the interrupted trial whose params it runs again
MISSED_BEATS = 4


def taken_over(study_name: str, number: int) -> str:
    return (f"trial {number} of study '{study_name}' was ended FAIL by another search process (its heartbeat "
            "looked stalled)")


def tell_if_running(study, trial, values=None, *, state=None) -> bool:
    """Tell ``trial`` (a Trial or its number) its result; False, telling nothing, when it had ended
    already: another worker took its worker for dead and ended it FAIL, or one racing us did."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    number = trial if isinstance(trial, int) else trial.number

    def running() -> bool:
        return number in {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running():
        return False
    try:
        study.tell(trial, values, state=state)
    except (ValueError, UpdateFinishedTrialError):  # "Cannot tell a FAIL trial": ended after our look
        if running():
            raise
        return False
    except RuntimeError as err:  # the grid sampler's last point calls Study.stop, valid in optimize() only
        if "Study.stop" not in str(err) or running():
            raise
    return True


@dataclass
class Worker:
    """This process's registration in ``study``, from ``join`` to ``leave``."""
    study: Any
    heartbeat_s: float
    records: StudyRecords | None = None  # None: a study in memory, which no other process joins
    id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
    started: float = field(default_factory=time.time)
    inherited: int = 0
    index: int | None = None  # workers registered before this one, or the next free (a seed offset: no two alike)
    taken_over: bool = False  # another process took this one for dead and inherited it
    inherited_from: list[str] = field(default_factory=list)  # the dead workers it took over
    watch: BeatWatch = field(default_factory=lambda: BeatWatch(MISSED_BEATS))
    _stop: threading.Event = field(default_factory=threading.Event)
    _joined: threading.Event = field(default_factory=threading.Event)  # until then its thread only beats
    _thread: threading.Thread | None = None

    @classmethod
    def join(cls, study, heartbeat_s: float, url: str | None) -> "Worker":
        """Register in ``study``, stored at ``url`` (None: in memory)."""
        worker = cls(study, heartbeat_s, StudyRecords(url, study.study_name) if url else None)
        worker.forget_old_claims()
        worker.study.set_user_attr(WORKER_PREFIX + worker.id, worker.record())
        # Beating from here: watching others below may take a while, and they watch this one meanwhile.
        worker._thread = threading.Thread(target=worker._beating, name="optuna-worker-heartbeat", daemon=True)
        worker._thread.start()
        others = worker.others()
        worker.index = sum(1 for r in others.values() if r["started"] < worker.started)
        held = {r.get("index") for r in others.values()}
        while worker.index in held:  # start times are each host's clock: one behind counts too few
            worker.index += 1
        dead = worker.dead_at_join(others)
        worker.fail_stale_trials(dead)
        worker.inherited = worker.inherit(dead)
        worker.beat()
        worker.retry_interrupted()
        worker._joined.set()
        return worker

    def record(self, ended: bool = False) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": self.started, "beat": time.time(),
                "every": self.heartbeat_s, "index": self.index, "ended": ended, "inherited": self.inherited}

    def beat(self, ended: bool = False) -> None:
        """Rewrite this worker's registration; once it is gone (inherited), write nothing again."""
        if self.taken_over:
            return
        if self.records is None:
            self.study.set_user_attr(WORKER_PREFIX + self.id, self.record(ended))
        elif not self.records.rewrite(WORKER_PREFIX + self.id, self.record(ended)):
            self.taken_over = True
            self._stop.set()
            log.warning("optuna worker %s: another search process took this one for dead and took over its "
                        "trials (its heartbeat looked stalled); this search stops after the trials it runs now",
                        self.id)

    def _beating(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as err:  # a database hiccup: the next beat tries again
                log.warning("optuna worker %s: heartbeat not written (%s)", self.id, err)
                continue
            if self.taken_over:
                return
            if not self._joined.is_set():
                continue
            try:
                self.fail_stale_trials({wid: r for wid, r in self.others().items() if self.verdict(wid, r) == DEAD})
            except Exception as err:  # the same: the next beat looks again
                log.warning("optuna worker %s: the other search processes not checked (%s)", self.id, err)

    def leave(self) -> None:
        """Stop beating and say this worker ended: a later run of the command inherits its trials.
        The thread ends first, so that no late beat of it says this worker lives on."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.beat(ended=True)
        if self.records is not None:
            self.records.close()

    def others(self) -> dict[str, dict[str, Any]]:
        attrs = self.study.user_attrs
        return {k[len(WORKER_PREFIX):]: v for k, v in attrs.items()
                if k.startswith(WORKER_PREFIX) and k != WORKER_PREFIX + self.id}

    def verdict(self, wid: str, record: dict[str, Any]) -> str:
        """ALIVE, UNSURE or DEAD (tracking/beats.py): ended, or its process here gone, is dead at once."""
        if record.get("ended") or gone_here(record.get("host"), record.get("pid")):
            return DEAD
        return self.watch.verdict(wid, record.get("beat"), _every(record, self.heartbeat_s))

    def dead_at_join(self, others: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The dead among ``others``, watching those of other hosts until each beats or stays still for
        MISSED_BEATS beats: a rerun on another host continues a search whose host was lost. One
        inherited meanwhile by another joiner (its registration gone) is not waited for."""
        here, announced = socket.gethostname(), False
        while True:
            verdicts = {wid: self.verdict(wid, r) for wid, r in others.items()}
            unsure = [wid for wid, v in verdicts.items() if v == UNSURE and others[wid].get("host") != here]
            if not unsure:
                return {wid: others[wid] for wid, v in verdicts.items() if v == DEAD}
            longest = max(_every(others[wid], self.heartbeat_s) for wid in unsure) * MISSED_BEATS
            if not announced:
                log.info("watching %d search process(es) of other hosts in study '%s' (up to %.0f s): alive if "
                         "their heartbeat moves", len(unsure), self.study.study_name, longest)
                announced = True
            time.sleep(min(1.0, max(0.05, longest / MISSED_BEATS / 4)))
            now = self.others()
            others = {wid: now[wid] for wid in others if wid in now}

    def fail_stale_trials(self, dead: dict[str, dict[str, Any]]) -> None:
        """RUNNING trials of dead workers end FAIL, and of workers no longer registered (inherited),
        and those nobody owns (a worker killed between asking for a trial and naming itself on it):
        at once when every other worker is dead, else once they stayed so for MISSED_BEATS of our
        beats (their start time is another host's clock: not read)."""
        from optuna.trial import TrialState

        registered = set(self.others()) | {self.id}
        only_dead_others = registered - {self.id} <= set(dead)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(TRIAL_WORKER_ATTR)
            if owner is None:
                stale = only_dead_others or self.watch.verdict(("unowned trial", trial.number), None,
                                                               self.heartbeat_s) == DEAD
            else:
                stale = owner in dead or owner not in registered
            if stale and tell_if_running(self.study, trial.number, state=TrialState.FAIL):
                log.warning("trial %d of study '%s' was left running by dead worker %s; marked FAIL", trial.number,
                            self.study.study_name, owner or "(none)")

    def inherit(self, dead: dict[str, dict[str, Any]]) -> int:
        """Take over the ``dead`` workers whose registration this process removes (of two racing
        for one, one does): their finished trials, and what they had inherited."""
        from optuna.trial import TrialState

        won = [wid for wid in dead if self.records is None or self.records.remove(WORKER_PREFIX + wid)]
        self.inherited_from = won
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        owned = [t.user_attrs.get(TRIAL_WORKER_ATTR) for t in self.study.get_trials(deepcopy=False, states=finished)]
        total = sum(owned.count(wid) + int(dead[wid].get("inherited", 0)) for wid in won)
        if total:
            log.info("continuing the search of %d ended process(es) in study '%s': %d finished trial(s) count "
                     "towards n_trials", len(won), self.study.study_name, total)
        return total

    def retry_interrupted(self) -> None:
        """Queue again, with its own params, each trial the inherited workers left interrupted (ended
        FAIL by a kill or a stop, not by its values or its job: no ``fail_reason``) and not queued
        again yet: the search's next trial finishes it, its job resuming its phases from their
        training states (kronos_exp/tracking/resume.py) rather than sampling anew."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        queued = {t.user_attrs.get(RETRY_ATTR) for t in trials}
        for t in trials:
            if (t.state == TrialState.FAIL and t.user_attrs.get(TRIAL_WORKER_ATTR) in self.inherited_from
                    and FAIL_REASON_ATTR not in t.user_attrs and t.number not in queued and t.params):
                self.study.enqueue_trial(t.params, user_attrs={RETRY_ATTR: t.number})
                log.info("trial %d of study '%s' was interrupted: the next trial runs it again with its params %s, "
                         "resuming where it stopped", t.number, self.study.study_name, t.params)

    def forget_old_claims(self) -> None:
        """Remove what searches of kronos_exp before bounded registrations left: a claim attribute
        (``kronos_inherit:<worker>:<its inheritor>``) per inherited worker, which kept that worker's
        registration too. Its trials are counted in its inheritor's: it is removed uncounted."""
        if self.records is None:
            return
        for key in [k for k in self.study.user_attrs if k.startswith(OLD_CLAIM_PREFIX)]:
            self.records.remove(WORKER_PREFIX + key[len(OLD_CLAIM_PREFIX):].rsplit(":", 1)[0])
            self.records.remove(key)


def _every(record: dict[str, Any], default: float) -> float:
    """A worker's own heartbeat interval (a registration from before it was recorded: ours)."""
    try:
        return float(record.get("every", default))
    except (TypeError, ValueError):
        return default
