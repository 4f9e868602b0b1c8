"""Metrics on their way to MLflow, so that training never waits on the tracking server.

Training hands its metrics over and goes on; a background thread sends them in order, keeps them
while the server does not answer, and sends them when it answers again.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call


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
                self._client.log_batch(run_id, metrics=batch)
            except Exception as err:  # server away (or refusing): keep them, try again shortly
                if self.last_error is None:
                    log.warning("the tracking server does not take metrics (%s); training goes on, metrics wait "
                                "here and are sent when it answers", str(err).splitlines()[0][:200])
                self.last_error = err
                time.sleep(self._retry_s)
                continue
            with self._changed:
                for _ in batch:
                    self._pending.popleft()
                if self.last_error is not None:
                    log.info("the tracking server answers again; sending the metrics kept meanwhile")
                self.last_error = None
                self._changed.notify_all()
