"""An unfinished run is resumed by one run only, even when two processes find it at the same moment;
a run whose files are refused marks nothing but itself."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from kronos_exp.tracking.claims import Claims, claim
from kronos_exp.tracking.resume import RESUMED_BY_TAG, Unfinished, state_file, take

_TAKER = """
import os, sys, time
from mlflow.tracking import MlflowClient
from kronos_exp.tracking.resume import Unfinished, take
from pathlib import Path
uri, old, mine, go, ready = sys.argv[1:6]
client = MlflowClient(uri)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
print("took" if take(client, Unfinished(old, "KILLED", Path("state.pt"), "fp"), mine) else "lost")
"""


def _store(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("resume", artifact_location=(tmp_path / "a").as_uri())
    old = client.create_run(experiment, tags={"phase": "tokenizer"}).info.run_id
    client.set_terminated(old, "KILLED")
    return client, experiment, old


def test_a_second_taker_is_refused(tmp_path):
    client, experiment, old = _store(tmp_path)
    first, second = (client.create_run(experiment).info.run_id for _ in range(2))
    unfinished = Unfinished(old, "KILLED", tmp_path / "state.pt", "fp")
    assert take(client, unfinished, first)
    assert not take(client, unfinished, second)
    assert take(client, unfinished, first)  # the same run asking again keeps it
    assert client.get_run(old).data.tags[RESUMED_BY_TAG] == first


def test_two_processes_racing_for_one_unfinished_run_take_it_once(tmp_path):
    client, experiment, old = _store(tmp_path)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _TAKER, f"sqlite:///{tmp_path / 'mlflow.db'}", old,
                               client.create_run(experiment).info.run_id, str(go), str(tmp_path / f"ready-{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):  # both past their imports
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        time.sleep(0.05)
    go.touch()
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["lost", "took"], [p.stderr for p in procs]


def test_a_refused_planted_run_never_marks_the_job_it_names_as_taken_up(tmp_path):
    """A planted run's ``mlflow.parentRunId`` is anyone's choice: marking that job taken up would
    stop the owner's rerun from reusing what the job finished."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("kronos_exp")
    job = client.create_run(experiment).info.run_id
    client.set_terminated(job, "KILLED")
    state = state_file(tmp_path / "evil", "tokenizer")
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not signed")
    planted = client.create_run(experiment, tags={"fingerprint": "fp", "phase": "tokenizer", "last_state": str(state),
                                                  "mlflow.parentRunId": job}).info.run_id
    client.set_terminated(planted, "KILLED")
    mine = client.create_run(experiment).info.run_id
    decided = claim(Claims(client, experiment, 30.0), "tokenizer", "fp", mine, skip_existing=False, resume=None)
    assert decided.action == "train"
    assert "state_refused" in client.get_run(planted).data.tags
    assert RESUMED_BY_TAG not in client.get_run(job).data.tags
