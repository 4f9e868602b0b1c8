"""Who is searching a shared study, so that a rerun continues a killed search while processes
started together each run their own trials.

Every sweep process registers in the study as a worker: a study user attribute
``kronos_worker:<id>`` holding its host, pid, a heartbeat it refreshes, whether it ended, and the
finished trials it took over. A worker is dead once it ended, its process on this host is gone,
or its heartbeat is older than four beats (another host). On joining, a process

- ends the RUNNING trials of dead workers FAIL (a trial is never left running), and
- inherits the dead workers nobody inherited yet: their finished trials (complete or pruned, with
  what they had inherited themselves) count towards its own ``n_trials``.

So a search killed during its third of 4 trials and rerun runs 2 more (4 finished in the study),
and two processes started together with ``n_trials=3`` each run 3 (6): a live worker is never
inherited. Two reruns racing for one dead worker both write a claim; the earliest claim wins.
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

from ..tracking.stale import process_alive

log = logging.getLogger(__name__)

WORKER_PREFIX = "kronos_worker:"
CLAIM_PREFIX = "kronos_inherit:"
TRIAL_WORKER_ATTR = "kronos_worker"  # on each trial: the worker that asked for it
MISSED_BEATS = 4


@dataclass
class Worker:
    """This process's registration in ``study``, from ``join`` to ``leave``."""
    study: Any
    heartbeat_s: float
    id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
    started: float = field(default_factory=time.time)
    inherited: int = 0
    index: int = 0  # workers registered in the study before this one (a seed offset: no two sample alike)
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def join(cls, study, heartbeat_s: float) -> "Worker":
        worker = cls(study, heartbeat_s)
        worker.beat()
        others = worker.others()
        worker.index = sum(1 for r in others.values() if r["started"] < worker.started)
        dead = {wid: r for wid, r in others.items() if worker.is_dead(r)}
        worker.fail_stale_trials(dead)
        worker.inherited = worker.inherit(dead)
        worker.beat()
        threading.Thread(target=worker._beating, name="optuna-worker-heartbeat", daemon=True).start()
        return worker

    def record(self, ended: bool = False) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": self.started, "beat": time.time(),
                "ended": ended, "inherited": self.inherited}

    def beat(self, ended: bool = False) -> None:
        self.study.set_user_attr(WORKER_PREFIX + self.id, self.record(ended))

    def _beating(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as err:  # a database hiccup: the next beat tries again
                log.warning("optuna worker %s: heartbeat not written (%s)", self.id, err)

    def leave(self) -> None:
        """Stop beating and say this worker ended: a later run of the command inherits its trials."""
        self._stop.set()
        self.beat(ended=True)

    def others(self) -> dict[str, dict[str, Any]]:
        attrs = self.study.user_attrs
        return {k[len(WORKER_PREFIX):]: v for k, v in attrs.items()
                if k.startswith(WORKER_PREFIX) and k != WORKER_PREFIX + self.id}

    def is_dead(self, record: dict[str, Any]) -> bool:
        if record.get("ended"):
            return True
        if record.get("host") == socket.gethostname() and not process_alive(int(record.get("pid", 0))):
            return True
        return time.time() - float(record.get("beat", 0)) > MISSED_BEATS * self.heartbeat_s

    def fail_stale_trials(self, dead: dict[str, dict[str, Any]]) -> None:
        """RUNNING trials of dead workers (or of none, asked over four beats ago) end FAIL."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(TRIAL_WORKER_ATTR)
            orphan = owner is None and time.time() - trial.datetime_start.timestamp() > MISSED_BEATS * self.heartbeat_s
            if owner in dead or orphan:
                self.study.tell(trial.number, state=TrialState.FAIL)
                log.warning("trial %d of study '%s' was left running by dead worker %s; marked FAIL", trial.number,
                            self.study.study_name, owner or "(none)")

    def inherit(self, dead: dict[str, dict[str, Any]]) -> int:
        """Claim the dead workers nobody claimed; the finished trials of those this worker won."""
        from optuna.trial import TrialState

        claims = {k for k in self.study.user_attrs if k.startswith(CLAIM_PREFIX)}
        free = [wid for wid in dead if not any(c.startswith(f"{CLAIM_PREFIX}{wid}:") for c in claims)]
        for wid in free:
            self.study.set_user_attr(f"{CLAIM_PREFIX}{wid}:{self.id}", time.time())
        attrs = self.study.user_attrs
        won = [wid for wid in free if min((v, k) for k, v in attrs.items()
                                          if k.startswith(f"{CLAIM_PREFIX}{wid}:"))[1].endswith(f":{self.id}")]
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        owned = [t.user_attrs.get(TRIAL_WORKER_ATTR) for t in self.study.get_trials(deepcopy=False, states=finished)]
        total = sum(owned.count(wid) + int(dead[wid].get("inherited", 0)) for wid in won)
        if total:
            log.info("continuing the search of %d ended process(es) in study '%s': %d finished trial(s) count "
                     "towards n_trials", len(won), self.study.study_name, total)
        return total
