"""An unfinished run is resumed by one run only, even when two processes find it at the same moment."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from kronos_exp.tracking.resume import RESUMED_BY_TAG, Unfinished, take

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
