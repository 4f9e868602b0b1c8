"""Processes that open a brand-new SQLite store at the same moment all get a working store."""
from __future__ import annotations

import os
import subprocess
import sys
import time

# Imports done, then all processes open the store on the same signal (MLflow migrates it on open).
_OPEN_STORE = """
import os, sys, time
from kronos_exp.tracking import Tracker
uri, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
tracker = Tracker(uri, "race")
tracker.client.create_run(tracker.experiment_id)
"""


def test_three_first_runs_on_a_new_store_all_proceed(tmp_path):
    go = tmp_path / "go"
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    ready = [tmp_path / f"ready-{n}" for n in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_STORE, uri, str(flag), str(go)], env=env,
                              stderr=subprocess.PIPE, text=True) for flag in ready]
    while not all(flag.exists() for flag in ready):  # all three are past their imports
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-1500:] for p in procs]
        time.sleep(0.05)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e[-1500:] for e in errors)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("race").experiment_id])) == 3
