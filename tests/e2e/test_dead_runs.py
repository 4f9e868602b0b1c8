"""A run whose process was killed (kill -9) does not stay RUNNING: the next invocation on the
store (here in this process) ends it FAILED and says so."""
from __future__ import annotations

import signal
import subprocess

import pytest

from harness import Pipeline
from kronos_exp.tracking.stale import HOST_TAG, PID_TAG

pytestmark = pytest.mark.e2e

QUICK = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]


def test_runs_of_a_killed_process_are_marked_failed_by_the_next_invocation(cli):
    proc = subprocess.Popen(cli.command("phases=tokenizer", "tokenizer.epochs=50", fast=False), cwd=cli.root,
                            env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "tokenizer: training" in line:
                break
        else:
            raise AssertionError("the run ended before the tokenizer phase started training")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    killed = cli.runs()
    assert sorted(r.info.status for r in killed) == ["RUNNING", "RUNNING"]
    assert {r.data.tags[PID_TAG] for r in killed} == {str(proc.pid)}

    later = Pipeline(cli.root).run(*QUICK, fast=False)  # the next invocation, in this process
    output = later.stdout + later.stderr
    notices = [line for line in output.splitlines() if "marked FAILED" in line]
    assert len(notices) == 1 and str(proc.pid) in notices[0], output[-3000:]
    runs = {r.info.run_id: r for r in cli.runs()}
    for old in killed:
        run = runs[old.info.run_id]
        assert run.info.status == "FAILED"
        assert f"process {proc.pid}" in run.data.tags["error"]
    assert sorted(r.info.status for r in runs.values()) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert all(r.data.tags[HOST_TAG] for r in runs.values())
