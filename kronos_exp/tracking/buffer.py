"""Metrics on their way to MLflow, so that training never waits on the tracking server.

Training hands its metrics over and goes on; a background thread sends them in order, keeps them
while the server does not answer, and sends them when it answers again. Metrics the server answers
and refuses (a 4xx: a name it does not take, a run deleted meanwhile) are dropped with a warning:
sending them again cannot help, and they must not hold up the metrics behind them.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
_RETRY_4XX = (408, 429)  # a timeout or a rate limit: the server may take the same metrics later


def refused_for_good(err: Exception) -> bool:
    """Whether ``err`` is the server's answer that it will never take these metrics (a 4xx other
    than a timeout or rate limit), as opposed to a server that is away or failing (no answer, 5xx)."""
    status = err.get_http_status_code() if isinstance(err, MlflowException) else 500
    return 400 <= status < 500 and status not in _RETRY_4XX


class MetricBuffer:
    def __init__(self, client: MlflowClient, retry_s: float = 2.0):
        self._client = client
        self._retry_s = retry_s
        self._pending: collections.deque[tuple[str, Metric]] = collections.deque()
        self._changed = threading.Condition()
        self.last_error: Exception | None = None  # why the last send failed; None once one succeeds
        threading.Thread(target=self._send_forever, name="kronos_exp-metrics", daemon=True).start()

    def put(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        with self._changed:
            self._pending.extend((run_id, Metric(k, float(v), stamp, step)) for k, v in metrics.items())
            self._changed.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every metric handed over so far to be sent; True if they were."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return not self._pending

    def _next_batch(self) -> tuple[str, list[Metric]]:
        """The oldest metrics of one run (a batch never spans runs, so a retry never duplicates)."""
        with self._changed:
            while not self._pending:
                self._changed.wait()
            run_id = self._pending[0][0]
            batch = []
            for rid, metric in self._pending:
                if rid != run_id or len(batch) == _MAX_BATCH:
                    break
                batch.append(metric)
            return run_id, batch

    def _send_forever(self) -> None:
        while True:
            run_id, batch = self._next_batch()
            try:
                self._deliver(run_id, batch)
            except Exception as err:  # server away: keep them, try again shortly
                if self.last_error is None:
                    log.warning("the tracking server does not take metrics (%s); training goes on, metrics wait "
                                "here and are sent when it answers", str(err).splitlines()[0][:200])
                self.last_error = err
                time.sleep(self._retry_s)
                continue
            if self.last_error is not None:
                log.info("the tracking server answers again; sending the metrics kept meanwhile")
            self.last_error = None

    def _deliver(self, run_id: str, batch: list[Metric]) -> None:
        """Send ``batch`` and take it off the queue. A batch the server refuses is sent again one
        metric at a time, so that only the metrics it refuses are dropped."""
        try:
            self._client.log_batch(run_id, metrics=batch)
        except Exception as err:
            if not refused_for_good(err):
                raise
            if len(batch) > 1:
                self._deliver_one_by_one(run_id, batch)
                return
            _warn_dropped(run_id, {batch[0].key: err})
        self._sent(len(batch))

    def _deliver_one_by_one(self, run_id: str, batch: list[Metric]) -> None:
        """Each metric on its own, off the queue as soon as it is sent or refused, so that a server
        lost halfway through gets none of them twice; one warning for those refused."""
        refused: dict[str, Exception] = {}
        try:
            for metric in batch:
                try:
                    self._client.log_batch(run_id, metrics=[metric])
                except Exception as err:
                    if not refused_for_good(err):
                        raise
                    refused.setdefault(metric.key, err)
                self._sent(1)
        finally:
            if refused:
                _warn_dropped(run_id, refused)

    def _sent(self, count: int) -> None:
        with self._changed:
            for _ in range(count):
                self._pending.popleft()
            self._changed.notify_all()


def _warn_dropped(run_id: str, refused: dict[str, Exception]) -> None:
    reasons = dict.fromkeys(str(err).splitlines()[0][:300] for err in refused.values())
    log.warning("the tracking server refused metric(s) %s of run %s (%s); they are dropped, the others are sent",
                ", ".join(repr(k[:80]) for k in refused), run_id, "; ".join(reasons))
