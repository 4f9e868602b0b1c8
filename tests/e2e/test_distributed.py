"""torchrun: two gloo processes on the CPU train what one process with their global batch trains,
and leave one set of runs, checkpoints and versions."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.ddp, pytest.mark.slow]

TINY = ["precision=fp32", "data.max_train_windows=64", "data.max_eval_windows=32", "tokenizer.epochs=1",
        "predictor.epochs=1"]
# Same batches either way; only the float summation order differs. The predictor also inherits the
# tokenizer's difference through its codes, hence its looser bound.
TOLERANCE = {"tokenizer_val_loss": 1e-3, "predictor_val_loss": 1e-2}  # relative


def job_metrics(cli) -> dict[str, float]:
    [job] = [r for r in cli.runs() if "phase" not in r.data.tags]
    return job.data.metrics


def torchrun_cli(cli, *overrides: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2`` of the CLI, 4 windows per process and batch."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", *cli.command(
        *TINY, "tokenizer.batch_size=4", "predictor.batch_size=4", *overrides, fast=False)[1:]]
    proc = subprocess.run(command, cwd=cli.root, env={**cli.env(), "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_two_gloo_processes_match_one_with_the_same_global_batch(cli, tmp_path, monkeypatch):
    proc = torchrun_cli(cli)
    assert "x 2 processes" in proc.stdout
    one = Pipeline(tmp_path / "one")  # one process (this one), on one thread as each rank
    one.root.mkdir()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one.run(*TINY, "tokenizer.batch_size=8", "predictor.batch_size=8", fast=False)
    two, reference = job_metrics(cli), job_metrics(one)
    for key, tolerance in TOLERANCE.items():
        assert two[key] == pytest.approx(reference[key], rel=tolerance), key

    # One job run, one run per phase, one checkpoint and one version per phase, all finished.
    runs = cli.runs()
    assert sorted(r.data.tags.get("phase", "job") for r in runs) == ["job", "predictor", "tokenizer"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(list(cli.root.glob("outputs/**/checkpoints/*/model.safetensors"))) == 2
    assert len(cli.versions("kronos-tokenizer")) == len(cli.versions("kronos-predictor")) == 1

    # batch_size is per process: 2 x 4 and 1 x 8 are the same training, hence the same fingerprint.
    fingerprints = [{r.data.tags.get("phase"): r.data.tags.get("fingerprint") for r in c.runs()} for c in (cli, one)]
    assert fingerprints[0] == fingerprints[1]

    # Evaluation under torchrun finds the registered predictor on rank 0; rank 1 takes its result.
    torchrun_cli(cli, "phases=eval", "eval.windows=4", "eval.sample_count=2")
    [evaluated] = [r for r in cli.runs() if r.data.tags.get("phase") == "eval"]
    assert evaluated.info.status == "FINISHED" and evaluated.data.tags["evaluated"] == "kronos-predictor v1"


# Rank 1 breaks in its third training step: a stand-in for an out-of-memory error on one GPU.
_BREAK_RANK_1 = textwrap.dedent("""
    import os
    from kronos_exp.phases.tokenizer import TokenizerPhase
    from kronos_exp.__main__ import main

    calls = []
    loss = TokenizerPhase.loss

    def breaking(self, model, batch):
        calls.append(1)
        if os.environ["RANK"] == "1" and len(calls) == 3:
            raise RuntimeError("rank 1 broke")
        return loss(self, model, batch)

    TokenizerPhase.loss = breaking
    main()
""")


def test_a_failing_rank_takes_the_others_down_and_the_runs_end_failed(cli):
    script = cli.root / "break_rank_1.py"
    script.write_text(_BREAK_RANK_1)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", str(script),
               *cli.command(*TINY, "phases=tokenizer", "tokenizer.batch_size=4", fast=False)[3:]]
    proc = subprocess.run(command, cwd=cli.root, env={**cli.env(), "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert output.count("RuntimeError: rank 1 broke") == 1, output[-5000:]
    assert "error: process 1 of this torchrun failed (its error is printed above)" in output, output[-5000:]
    assert "Connection closed by peer" not in output  # rank 0's broken collective is not the news
    assert {r.data.tags.get("phase", "job"): r.info.status for r in cli.runs()} == {"job": "FAILED",
                                                                                    "tokenizer": "FAILED"}


def _rank_pid(parent: int, rank: int) -> int:
    """The pid of the process torchrun ``parent`` started for ``rank`` (from its environment)."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return int(child)
    raise AssertionError(f"torchrun {parent} has no process of rank {rank}")


def test_a_killed_rank_ends_the_runs_failed_and_says_which(cli):
    """SIGKILL leaves rank 1 no chance to report: rank 0 sees a broken collective or torchrun's
    SIGTERM, and must still end the runs FAILED (not KILLED or FINISHED) naming process 1."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", *cli.command(
        *TINY, "phases=tokenizer", "tokenizer.epochs=100", "tokenizer.batch_size=4", fast=False)[1:]]
    proc = subprocess.Popen(command, cwd=cli.root, env={**cli.env(), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "tokenizer: training" in line:
                break
        os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    assert ("error: process 1 of this torchrun failed (it was killed, without an error of its own; torchrun names "
            "the signal); the MLflow runs are marked FAILED") in output, output[-5000:]
    assert "interrupted" not in output and "Error executing job" not in output, output[-5000:]  # no traceback of rank 0
    runs = {r.data.tags.get("phase", "job"): r for r in cli.runs()}
    assert {k: r.info.status for k, r in runs.items()} == {"job": "FAILED", "tokenizer": "FAILED"}
    assert all(r.data.tags["error"].startswith("process 1 of this torchrun failed") for r in runs.values())


def test_a_stopped_two_process_run_resumes_with_two_processes(cli):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", *cli.command(
        *TINY, "data.max_train_windows=128", "predictor.epochs=3", "tokenizer.batch_size=4", "predictor.batch_size=4",
        "checkpoint_every_steps=2", fast=False)[1:]]
    env = {**cli.env(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=cli.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not list(cli.root.glob("outputs/runs/*/*/checkpoints/predictor.last.safetensors")):
            assert proc.poll() is None and time.time() < deadline, "the predictor never saved a training state"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
        proc.wait()
    assert out.count("run the same command again to resume") == 1, out[-3000:]  # said once, by rank 0

    rerun = subprocess.run(command, cwd=cli.root, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "predictor: resuming run" in rerun.stdout + rerun.stderr
    predictors = [r for r in cli.runs() if r.data.tags.get("phase") == "predictor"]
    assert sorted(r.info.status for r in predictors) == ["FINISHED", "KILLED"]
    assert len(cli.versions("kronos-tokenizer")) == len(cli.versions("kronos-predictor")) == 1


def test_a_setting_every_rank_refuses_is_said_once_by_rank_0(cli):
    """Both ranks meet the bad value before they join a process group; rank 1 waits on torchrun's
    store until rank 0 has said it (no sleep), and the run ends with rank 0's line alone."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", *cli.command(*TINY, "data.clip=-1", fast=False)[1:]]
    proc = subprocess.run(command, cwd=cli.root, env={**cli.env(), "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert output.count("error: data.clip=-1.0 is not valid; it must be > 0") == 1, output[-5000:]
    assert "Traceback" not in output.split("error: data.clip")[0], output[-5000:]  # rank 1 ended quietly first
