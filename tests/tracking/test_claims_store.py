"""Claims on a fingerprint, read from a real tracking store: the earliest live claim holds it; a
claim whose process is gone, or whose run ended, holds nothing (a heartbeat that stopped on
another host: tests/tracking/test_claims_skew.py)."""
import os
import socket
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from kronos_exp.tracking.claims import HEARTBEAT_TAG, Claims
from kronos_exp.tracking.stale import HOST_TAG, PID_TAG


def test_only_earlier_live_claims_hold_a_fingerprint(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("claims", artifact_location=(tmp_path / "a").as_uri())
    claims = Claims(client, experiment, interval_s=1.0)

    def phase_run(fp, start_ms, beat_age_s, **tags):  # by default, of a live process of this host: this one
        tags = {"fingerprint": fp, "phase": "tokenizer", HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
                **tags}
        run = client.create_run(experiment, start_time=start_ms, tags=tags)
        client.set_tag(run.info.run_id, HEARTBEAT_TAG, repr(time.time() - beat_age_s))
        return run.info.run_id

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    now_ms = int(time.time() * 1000)
    live_early = phase_run("fp", now_ms - 3000, beat_age_s=0)
    # Its process, on this host, is gone (the age of a heartbeat says nothing: clocks differ between hosts).
    here_gone = {HOST_TAG: socket.gethostname(), PID_TAG: str(gone.pid)}
    stale_early = phase_run("fp", now_ms - 4000, beat_age_s=10, **here_gone)
    ended_early = phase_run("fp", now_ms - 5000, beat_age_s=0)
    client.set_terminated(ended_early, "KILLED")
    other_fp = phase_run("other", now_ms - 6000, beat_age_s=0)
    mine = phase_run("fp", now_ms, beat_age_s=0)
    later = phase_run("fp", now_ms + 1000, beat_age_s=0)

    assert [r.info.run_id for r in claims.earlier_live_claims("tokenizer", "fp", mine)] == [live_early]
    assert claims.earlier_live_claims("tokenizer", "fp", live_early) == []  # the earliest live claim trains
    assert {r.info.run_id for r in claims.earlier_live_claims("tokenizer", "fp", later)} == {live_early, mine}
    assert not claims.alive(client.get_run(stale_early)) and claims.alive(client.get_run(other_fp))


def test_heartbeat_refreshes_while_the_block_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("claims", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    with Claims(client, experiment, interval_s=0.2).heartbeat(run_id):
        first = float(client.get_run(run_id).data.tags[HEARTBEAT_TAG])
        time.sleep(0.7)
        assert float(client.get_run(run_id).data.tags[HEARTBEAT_TAG]) > first
    last = client.get_run(run_id).data.tags[HEARTBEAT_TAG]
    time.sleep(0.5)
    assert client.get_run(run_id).data.tags[HEARTBEAT_TAG] == last  # stops with the block
