"""A training process killed outright (SIGKILL) and run again carries on where its last saved
state left it, and ends with the weights of a run never interrupted."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import mlflow


# Tiny and deterministic: one thread, so a rerun does the same float operations in the same order.
TINY = ["precision=fp32", "data.max_train_windows=64", "data.max_eval_windows=32", "tokenizer.epochs=1",
        "predictor.epochs=2", "tokenizer.batch_size=8", "predictor.batch_size=8", "checkpoint_every_steps=2"]


def one_thread(cli) -> dict[str, str]:
    return {**cli.env(), "OMP_NUM_THREADS": "1"}


def run(cli) -> subprocess.CompletedProcess:
    proc = subprocess.run(cli.command(*TINY, fast=False), cwd=cli.root, env=one_thread(cli), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def registered_weights(cli, name: str) -> bytes:
    [version] = cli.versions(name)
    mlflow.set_tracking_uri(cli.tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(cli.root / "dl" / name))
    return (Path(local) / "model.safetensors").read_bytes()


def test_sigkill_mid_epoch_then_rerun_resumes_to_the_same_weights(cli, tmp_path):
    reference = type(cli)(tmp_path / "reference")
    reference.root.mkdir()
    run(reference)
    proc = subprocess.Popen(cli.command(*TINY, fast=False), cwd=cli.root, env=one_thread(cli),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(cli.root.glob("outputs/runs/*/*/checkpoints/predictor.last.pt")):
            assert proc.poll() is None and time.time() < deadline, "the predictor never saved a training state"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no handler runs: the runs stay RUNNING, nothing is cleaned up
    finally:
        proc.kill()
        proc.wait()
    status = {r.data.tags.get("phase", "job"): r.info.status for r in cli.runs()}
    assert status == {"job": "RUNNING", "tokenizer": "FINISHED", "predictor": "RUNNING"}

    rerun = run(cli)  # the same command
    assert "predictor: resuming run" in rerun.stdout + rerun.stderr
    runs = cli.runs()
    old, new = [r for r in runs if r.data.tags.get("phase") == "predictor"]
    assert old.info.status == "FAILED" and old.data.tags["resumed_by"] == new.info.run_id
    assert new.info.status == "FINISHED" and new.data.tags["resumed_from"] == old.info.run_id
    tokenizers = [r for r in runs if r.data.tags.get("phase") == "tokenizer"]
    assert [r.data.tags["skipped"] for r in tokenizers] == ["false", "true"]  # finished: reused, not retrained
    assert len(cli.versions("kronos-tokenizer")) == len(cli.versions("kronos-predictor")) == 1
    steps = [m.step for m in cli.client().get_metric_history(new.info.run_id, "train_loss")]
    assert steps == sorted(set(steps)) and steps[0] > 1  # continues the step counter, no repeats
    assert registered_weights(cli, "kronos-predictor") == registered_weights(reference, "kronos-predictor")
    # A third run of the same command has nothing to resume and no interrupted job to finish: it trains.
    third = run(cli)
    assert "resuming" not in third.stdout + third.stderr
