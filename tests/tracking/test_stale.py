"""Runs whose process is gone do not stay RUNNING: the next invocation on the store ends them FAILED
(tracking/stale.py). A killed process: tests/e2e/test_dead_runs.py."""
from __future__ import annotations

from kronos_exp.tracking.stale import HOST_TAG, PID_TAG


def test_a_job_whose_phase_was_taken_over_is_ended_failed_by_the_next_invocation(tmp_path):
    """A job on a lost host keeps its job run RUNNING after another host took its phase over
    (tracking/resume.take tags it resumed_by); the next invocation on the store ends it FAILED."""
    from kronos_exp.tracking import Tracker
    from kronos_exp.tracking.resume import RESUMED_BY_TAG

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "kronos_exp")
    client = tracker.client
    lost = client.create_run(tracker.experiment_id, tags={HOST_TAG: "lost-host", PID_TAG: "4242"}).info.run_id
    alive = client.create_run(tracker.experiment_id, tags={HOST_TAG: "other-host", PID_TAG: "4243"}).info.run_id
    client.set_tag(lost, RESUMED_BY_TAG, "taker")
    tracker.end_dead_runs()
    assert client.get_run(alive).info.status == "RUNNING"  # another host's run, not taken over: alive for all we know
    ended = client.get_run(lost)
    assert ended.info.status == "FAILED" and "taken over by run taker" in ended.data.tags["error"]
