"""Claims judged without comparing another host's clock with ours (issue 27, item 6): a holder
whose clock is a minute off holds its fingerprint while its heartbeat moves; one whose heartbeat
stops is dead after four intervals of watching, whatever its clock said; a run of this host whose
process is gone is dead at once. Each holder's clock is played by the stamps a thread writes
into a real SQLite store."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from kronos_exp.tracking.claims import HEARTBEAT_TAG, Claims
from kronos_exp.tracking.resume import STATE_TAG
from kronos_exp.tracking.stale import HOST_TAG, PID_TAG

INTERVAL = 0.5  # the holders' and the observer's mlflow.heartbeat_s


@pytest.fixture
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.create_experiment("claims", artifact_location=(tmp_path / "a").as_uri())


def _claim(client, experiment, skew_s: float, start_ms: int | None = None, **tags) -> str:
    """A tokenizer run on fingerprint ``fp`` stamped by a clock ``skew_s`` off ours."""
    start = start_ms if start_ms is not None else int((time.time() + skew_s) * 1000)
    return client.create_run(experiment, start_time=start, tags={
        "fingerprint": "fp", "phase": "tokenizer", HEARTBEAT_TAG: repr(time.time() + skew_s), **tags}).info.run_id


@contextlib.contextmanager
def _beating(client, run_id: str, skew_s: float):
    """Beats every INTERVAL from a clock ``skew_s`` off ours, as the holder's heartbeat thread would."""
    done = threading.Event()

    def beat():
        while not done.wait(INTERVAL):
            client.set_tag(run_id, HEARTBEAT_TAG, repr(time.time() + skew_s))
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("skew_s", [60.0, -60.0])
def test_a_beating_holder_with_a_skewed_clock_stays_alive(store, skew_s):
    client, experiment = store
    holder = _claim(client, experiment, skew_s)
    claims = Claims(client, experiment, interval_s=INTERVAL)
    with _beating(client, holder, skew_s):
        deadline = time.monotonic() + 8 * INTERVAL  # twice the stale limit
        while time.monotonic() < deadline:
            assert claims.alive(client.get_run(holder))
            time.sleep(INTERVAL / 4)


@pytest.mark.parametrize("skew_s", [60.0, -60.0, 0.0])
def test_a_silent_holder_is_dead_after_four_intervals_of_watching(store, skew_s):
    client, experiment = store
    holder = _claim(client, experiment, skew_s)
    claims = Claims(client, experiment, interval_s=INTERVAL)
    first_look = time.monotonic()
    while claims.alive(client.get_run(holder)):
        assert time.monotonic() - first_look < 8 * INTERVAL, "a silent holder was never declared dead"
        time.sleep(INTERVAL / 4)
    assert time.monotonic() - first_look >= 4 * INTERVAL  # not before four intervals of watching


def test_a_waiter_takes_over_a_silent_holder_after_four_intervals(store):
    """The claim of a host whose clock ran ahead when it stopped beating looked fresh for a minute."""
    client, experiment = store
    now_ms = int(time.time() * 1000)
    _claim(client, experiment, 60.0, start_ms=now_ms - 1000)
    mine = _claim(client, experiment, 0.0, start_ms=now_ms)
    started = time.monotonic()
    Claims(client, experiment, interval_s=INTERVAL).wait_for_earlier("tokenizer", "fp", mine)
    assert 4 * INTERVAL <= time.monotonic() - started < 4 * INTERVAL + 3


def test_a_run_of_this_host_whose_process_is_gone_is_dead_at_once(store):
    client, experiment = store
    claims = Claims(client, experiment, interval_s=INTERVAL)
    gone = _claim(client, experiment, 0.0, **{HOST_TAG: socket.gethostname(), PID_TAG: str(_dead_pid())})
    started = time.monotonic()
    assert not claims.alive(client.get_run(gone)) and time.monotonic() - started < 4 * INTERVAL  # not watched
    # The same pid on another host says nothing about the process there: its heartbeat does.
    elsewhere = _claim(client, experiment, 0.0, **{HOST_TAG: "another-host", PID_TAG: str(_dead_pid())})
    with _beating(client, elsewhere, 0.0):
        assert claims.alive(client.get_run(elsewhere))


def test_a_claim_of_another_host_first_seen_is_watched_until_its_heartbeat_tells(store):
    """So that a job requeued on another node resumes the run of a node that was lost (its
    heartbeat stamped by a clock a minute ahead looked fresh for a minute), and leaves a live one."""
    client, experiment = store
    claims = Claims(client, experiment, interval_s=INTERVAL)
    lost = _claim(client, experiment, 60.0, **{HOST_TAG: "lost-node", PID_TAG: "4242"})
    started = time.monotonic()
    assert not claims.alive(client.get_run(lost))
    assert 4 * INTERVAL <= time.monotonic() - started < 4 * INTERVAL + 3
    live = _claim(client, experiment, -60.0, **{HOST_TAG: "other-node", PID_TAG: "4242"})
    with _beating(client, live, -60.0):
        started = time.monotonic()
        assert claims.alive(client.get_run(live)) and time.monotonic() - started < 4 * INTERVAL


def test_a_claim_already_training_holds_the_fingerprint_whatever_its_start_time(store):
    """A host whose clock is a minute behind starts a claim while another job trains the
    fingerprint: by start times it looks the earlier, yet it must wait for the one training."""
    client, experiment = store
    now_ms = int(time.time() * 1000)
    state = {STATE_TAG: "/x/checkpoints/tokenizer.last.safetensors"}
    training = _claim(client, experiment, 0.0, start_ms=now_ms, **state)
    behind = _claim(client, experiment, -60.0)
    claims = Claims(client, experiment, interval_s=INTERVAL)
    assert [r.info.run_id for r in claims.earlier_live_claims("tokenizer", "fp", behind)] == [training]
    assert claims.earlier_live_claims("tokenizer", "fp", training) == []
