"""A training process killed outright (SIGKILL) and run again carries on where its last saved
state left it, and ends with the weights of a run never interrupted; killed at any step of
registering its checkpoint, the rerun never registers a second version; a pickle planted where
its state was runs nothing. The killed process is a real CLI; the rerun (the same command) and the
never-interrupted reference run in this process (tests/harness.py Pipeline), on one thread as it."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from harness import Outcome, Pipeline
from planted_pickle import planted_pickle

pytestmark = pytest.mark.e2e


# Tiny and deterministic: one thread, so a rerun does the same float operations in the same order.
TINY = ["precision=fp32", "data.max_train_windows=64", "data.max_eval_windows=32", "tokenizer.epochs=1",
        "predictor.epochs=2", "tokenizer.batch_size=8", "predictor.batch_size=8", "checkpoint_every_steps=2"]


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch):
    """One thread for the runs in this process too (OMP_NUM_THREADS, as for the subprocesses): the same
    float operations in the same order wherever a run goes on."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def one_thread(cli) -> dict[str, str]:
    return {**cli.env(), "OMP_NUM_THREADS": "1"}


def run(store) -> Outcome:
    """The same command, run in this process (Pipeline) on the store in ``store.root``."""
    return Pipeline(store.root).run(*TINY, fast=False)


def registered_weights(cli, name: str) -> bytes:
    [version] = cli.versions(name)
    mlflow.set_tracking_uri(cli.tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(cli.root / "dl" / name))
    return (Path(local) / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes_to_the_same_weights(cli, tmp_path):
    reference = type(cli)(tmp_path / "reference")
    reference.root.mkdir()
    run(reference)
    proc = subprocess.Popen(cli.command(*TINY, fast=False), cwd=cli.root, env=one_thread(cli),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(cli.root.glob("outputs/runs/*/*/checkpoints/predictor.last.safetensors")):
            assert proc.poll() is None and time.time() < deadline, "the predictor never saved a training state"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no handler runs: the runs stay RUNNING, nothing is cleaned up
    finally:
        proc.kill()
        proc.wait()
    status = {r.data.tags.get("phase", "job"): r.info.status for r in cli.runs()}
    assert status == {"job": "RUNNING", "tokenizer": "FINISHED", "predictor": "RUNNING"}

    rerun = run(cli)  # the same command (in this process)
    assert "predictor: resuming run" in rerun.stdout + rerun.stderr
    runs = cli.runs()
    old, new = [r for r in runs if r.data.tags.get("phase") == "predictor"]
    assert old.info.status == "FAILED" and old.data.tags["resumed_by"] == new.info.run_id
    assert new.info.status == "FINISHED" and new.data.tags["resumed_from"] == old.info.run_id
    old_folder, new_folder = (Path(r.data.tags["last_state"]).parent.parent for r in (old, new))
    assert new_folder != old_folder and (new_folder / "checkpoints" / "predictor").is_dir()  # its own folder
    assert not Path(old.data.tags["last_state"]).exists()  # registered: the state it resumed from is gone too
    tokenizers = [r for r in runs if r.data.tags.get("phase") == "tokenizer"]
    assert [r.data.tags["skipped"] for r in tokenizers] == ["false", "true"]  # finished: reused, not retrained
    assert len(cli.versions("kronos-tokenizer")) == len(cli.versions("kronos-predictor")) == 1
    steps = [m.step for m in cli.client().get_metric_history(new.info.run_id, "train_loss")]
    assert steps == sorted(set(steps)) and steps[0] > 1  # continues the step counter, no repeats
    assert registered_weights(cli, "kronos-predictor") == registered_weights(reference, "kronos-predictor")
    # A third run of the same command has nothing to resume and no interrupted job to finish: it trains.
    third = run(cli)
    assert "resuming" not in third.stdout + third.stderr


# A real CLI process that SIGKILLs itself at one step of registering the tokenizer's checkpoint.
_KILLED_AT = """
import os, signal, sys
import mlflow
from mlflow.tracking import MlflowClient
from kronos_exp.__main__ import main

def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def then_kill(original, when):
    def patched(*args, **kwargs):
        out = original(*args, **kwargs)
        if when(*args, **kwargs):
            kill()
        return out
    return patched

step = sys.argv.pop(1)
if step == "log_artifacts":
    mlflow.log_artifacts = then_kill(mlflow.log_artifacts, lambda local, path=None: path == "checkpoint")
elif step == "create_model_version":
    MlflowClient.create_model_version = then_kill(MlflowClient.create_model_version, lambda *a, **k: True)
elif step == "registered_version":  # so before the state file is deleted: nothing happens between
    mlflow.set_tag = then_kill(mlflow.set_tag, lambda key, value, **k: key == "registered_version")
elif step == "packaging":  # the first move after which the predictor folder holds an MLmodel
    import os, shutil
    from pathlib import Path
    def packaged(*args, **kwargs):
        return any(Path(a).name == "MLmodel" or (Path(a) / "MLmodel").is_file() for a in args[1:2])
    shutil.move = then_kill(shutil.move, packaged)
    os.replace = then_kill(os.replace, packaged)
sys.argv[0] = "kronos_exp"
main()
"""

TOKENIZER_ONLY = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]
REGISTRATION_STEPS = ["log_artifacts", "create_model_version", "registered_version"]


def killed_at(cli, step: str, *overrides: str) -> None:
    command = cli.command(*TOKENIZER_ONLY, *overrides, fast=False)
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT, step, *command[3:]], cwd=cli.root, env=one_thread(cli),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def rerun(cli, *overrides: str) -> tuple[int, str]:
    """The same command, run in this process on the store."""
    proc = Pipeline(cli.root).run(*TOKENIZER_ONLY, *overrides, fast=False, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("seed, step", list(enumerate(REGISTRATION_STEPS, start=1)))
def test_a_kill_at_each_step_of_registration_never_registers_twice(module_cli, seed, step):
    killed_at(module_cli, step, f"seed={seed}")  # each step its own seed, so its own fingerprint
    code, out = rerun(module_cli, f"seed={seed}")
    assert code == 0, out[-4000:]
    per_fingerprint = Counter(v.tags["fingerprint"] for v in module_cli.versions("kronos-tokenizer"))
    assert len(per_fingerprint) == seed and set(per_fingerprint.values()) == {1}, per_fingerprint
    assert "tokenizer: resuming run" in out
    if step != "log_artifacts":  # a version exists: the rerun takes it, never registers another
        assert "before it stopped; not registering again" in out



def test_a_pickle_planted_as_the_state_runs_nothing_and_is_never_offered_again(module_cli):
    cli, marker = module_cli, module_cli.root / "pwned"
    killed_at(cli, "log_artifacts", "seed=100")
    [old] = [r for r in cli.runs() if r.info.status == "RUNNING" and r.data.tags.get("phase") == "tokenizer"]
    state = Path(old.data.tags["last_state"])
    state.write_bytes(planted_pickle(marker))
    code, out = rerun(cli, "seed=100")
    assert not marker.exists()
    assert code == 0, out[-4000:]
    refused = [line for line in out.splitlines() if "not resuming run" in line]
    assert len(refused) == 1 and str(state) in refused[0] and "trains from the start" in refused[0], out[-3000:]
    assert "resuming run" not in out.replace("not resuming run", "")
    old = cli.client().get_run(old.info.run_id)
    assert "state_refused" in old.data.tags and "resumed_by" in old.data.params  # never offered again
    [new] = [r for r in cli.runs() if r.data.tags.get("resumed_by") is None and r.data.tags.get("phase") == "tokenizer"
             and r.info.start_time > old.info.start_time]
    assert new.info.status == "FINISHED" and "resumed_from" not in new.data.tags
    assert not Path(new.data.tags["last_state"]).is_relative_to(state.parent.parent)  # its own run folder


def test_a_kill_while_the_predictor_is_packaged_resumes_to_the_same_weights(cli, tmp_path):
    """Packaging the best checkpoint as an MLflow model used to move its files in one by one: a kill
    between two left a half package, and every rerun failed with 'packaging would overwrite it'."""
    reference = type(cli)(tmp_path / "reference")
    reference.root.mkdir()
    run(reference)
    command = cli.command(*TINY, fast=False)
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT, "packaging", *command[3:]], cwd=cli.root,
                          env=one_thread(cli), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    rerun = run(cli)
    assert "predictor: resuming run" in rerun.stdout + rerun.stderr
    assert registered_weights(cli, "kronos-predictor") == registered_weights(reference, "kronos-predictor")
    [version] = cli.versions("kronos-predictor")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "v")))
    assert {"MLmodel", "model.safetensors", "config.json", "window.json", "artifacts"} <= {p.name for p in local.iterdir()}
