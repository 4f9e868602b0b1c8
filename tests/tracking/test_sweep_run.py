"""The sweep's parent run (tracking/sweep.py SweepRun) ends what its jobs could not: runs of a worker
that died mid-job. Sweeps themselves, through the real CLI and its launchers: tests/e2e/test_sweeps.py."""
from __future__ import annotations

import os


def test_closing_a_sweep_ends_runs_whose_process_died(tmp_path):
    """A worker killed mid-job (OOM, a launcher aborting) never ends its runs; the sweep does."""
    from kronos_exp.schemas import MlflowConfig
    from kronos_exp.tracking.sweep import SweepRun

    sweep = SweepRun.start(MlflowConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"), ["minimize"], [])
    client, experiment = sweep.tracker.client, sweep.tracker.experiment_id
    job = client.create_run(experiment, tags={"mlflow.parentRunId": sweep.run_id})
    phase = client.create_run(experiment, tags={"mlflow.parentRunId": job.info.run_id})
    done = client.create_run(experiment, tags={"mlflow.parentRunId": sweep.run_id})
    client.set_terminated(done.info.run_id, "FINISHED")
    sweep.close("FAILED")
    status = {name: client.get_run(run.info.run_id).info.status
              for name, run in (("job", job), ("phase", phase), ("done", done))}
    assert status == {"job": "KILLED", "phase": "KILLED", "done": "FINISHED"}
    assert client.get_run(sweep.run_id).info.status == "FAILED"
    os.environ.pop("KRONOS_EXP_PARENT_RUN_ID", None)
    os.environ.pop("KRONOS_EXP_SWEEP_ID", None)
