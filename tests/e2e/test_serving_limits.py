"""What one client can make a served predictor spend: a real `mlflow models serve` with the body
limit in front (UVICORN_HTTP names forecasting.body_limit's protocol) and a package allowing 1 MB
bodies and one forecast at a time. A body past the limit is refused before it is read, and a light
request is answered or refused within a bound while heavy ones run."""
from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from kronos_exp.forecasting.requests import Limits
from model_server import ModelServer
from test_served_model import history, register_packaged_predictor

pytestmark = pytest.mark.e2e

LIMITS = Limits(max_pred_len=1000, max_sample_count=4, max_history_rows=300, timeout_s=30.0, max_body_mb=1.0,
                max_concurrent=1, queue_s=0.5)
BODY_LIMITED = {"UVICORN_HTTP": "kronos_exp.forecasting.body_limit:BodyLimitedH11"}
HEAVY = dict(pred_len=600, sample_count=4, seed=0)  # 1-4 s alone on 2 cores (the window slides); 6 at once, 10+


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    server = ModelServer(root, register_packaged_predictor(root, LIMITS), env={**os.environ, **BODY_LIMITED})
    yield server
    server.stop()


def peak_rss_mb(pgid: int) -> float:
    """The largest peak RSS among the server's processes (the CLI and the uvicorn it started)."""
    peaks = [0.0]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:  # state, ppid, pgrp
                peaks.append(int(re.search(r"VmHWM:\s+(\d+)", (stat.parent / "status").read_text())[1]) / 1024)
        except (OSError, TypeError):  # the process ended meanwhile
            continue
    return max(peaks)


def big_body(megabytes: int) -> bytes:
    """A well-formed request of ``megabytes`` MB: the history's rows over and over (the finding's 108 MB)."""
    split = json.loads(history().to_json(orient="split", index=False, date_format="iso"))
    rows = [json.dumps(row).encode() for row in split["data"]]
    data = b",".join(rows * (megabytes * 10 ** 6 // sum(len(r) + 1 for r in rows) + 1))
    return b'{"dataframe_split": {"columns": %s, "data": [%s]}, "params": {"pred_len": 4}}' % (
        json.dumps(split["columns"]).encode(), data)


def post(server: ModelServer, body, timeout: float = 30, **headers) -> tuple[int, dict, float]:
    """(status, JSON answer, seconds) of a POST of ``body`` (bytes, or an iterable: sent chunked)."""
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    start = time.monotonic()
    try:
        connection.request("POST", "/invocations", body=body, encode_chunked=not isinstance(body, bytes),
                           headers={"Content-Type": "application/json", **headers})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read()), time.monotonic() - start
    finally:
        connection.close()


def test_a_body_past_the_limit_is_refused_before_it_is_read(server):
    status, answer, seconds = post(server, b"", **{"Content-Length": "108000000"})  # declared; none of it sent
    assert status == 413 and seconds < 5, (status, answer, seconds)
    assert answer["message"] == ("the request body is 108.0 MB; this model takes at most 1 MB "
                                 "(serving.max_body_mb): send fewer rows")

    body, before = big_body(108), peak_rss_mb(server.proc.pid)
    status, answer, seconds = post(server, body)  # sent in full, as a client sends it
    assert status == 413 and seconds < 20, (status, answer, seconds)
    assert peak_rss_mb(server.proc.pid) - before < 100  # not the 2.5 GB that parsing it took

    chunks = [body[:100_000]] * 10 + [b" "]  # no Content-Length: counted, refused at its last byte
    status, answer, _ = post(server, chunks)
    assert status == 413 and answer["message"].startswith("the request body is over 1 MB"), answer

    status, answer, _ = post(server, big_body(0))  # one history (a few KB) passes, sent either way
    assert status == 200 and len(answer["predictions"]) == 4, answer
    status, answer, _ = post(server, [big_body(0)])
    assert status == 200 and len(answer["predictions"]) == 4, answer


def test_a_light_request_is_answered_or_refused_at_once_while_heavy_ones_run(server):
    with ThreadPoolExecutor(9) as pool:
        heavy = [pool.submit(server.ask, history(300), **HEAVY) for _ in range(8)]
        time.sleep(0.5)
        status, body, seconds = server.ask(history(), timeout=60, pred_len=4, seed=0)
        assert status in (200, 503) and seconds < 3, (status, body[:300], seconds)
        answers = [future.result() for future in heavy]
    busy = [(s, json.loads(b)["message"], t) for s, b, t in answers if s == 503]
    assert len(busy) >= 6 and all(t < 3 for _, _, t in busy), answers  # one runs; the rest wait 0.5 s, then go
    assert busy[0][1] == ("the model is busy: 1 forecast(s) are running, its limit (serving.max_concurrent); "
                          "retry in a few seconds")
    assert 200 in {s for s, _, _ in answers}  # the one that ran
    if status == 503:
        assert json.loads(body)["message"] == busy[0][1]
    urllib.request.urlopen(f"{server.url}/ping", timeout=5)  # the server is well
