"""Early stopping through the real CLI: a process killed outright (SIGKILL) in the epoch before its
stop, or after the stop while it registers, reruns to the weights and the stop epoch of a run never
killed; under torchrun every rank stops at rank 0's epoch."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest

from harness import Cli, Pipeline

pytestmark = pytest.mark.e2e

# 8 steps an epoch; the first epoch improves (on nothing), no later one can by more than min_delta:
# the tokenizer stops after its second epoch of four.
EARLY = ["precision=fp32", "phases=tokenizer", "data.max_train_windows=64", "data.max_eval_windows=16",
         "tokenizer.batch_size=8", "tokenizer.epochs=4", "tokenizer.early_stopping.patience=1",
         "tokenizer.early_stopping.min_delta=1000", "checkpoint_every_steps=2"]

# A real CLI process that SIGKILLs itself: in its second epoch once the state at its fourth batch is
# on disk ("mid_epoch"), or once its early-stopped checkpoint is logged ("registering").
_KILLED_AT = textwrap.dedent("""
    import os, signal, sys
    import mlflow
    from kronos_exp.train.state import TrainingState
    from kronos_exp.__main__ import main

    def kill():
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv.pop(1) == "mid_epoch":
        save = TrainingState.save
        def saved(self, path, before_replace=None):
            save(self, path, before_replace)
            if (self.epoch, self.batches_done) == (1, 4):
                kill()
        TrainingState.save = saved
    else:
        log_artifacts = mlflow.log_artifacts
        def logged(local_dir, artifact_path=None, **kwargs):
            log_artifacts(local_dir, artifact_path, **kwargs)
            if artifact_path == "checkpoint":
                kill()
        mlflow.log_artifacts = logged
    sys.argv[0] = "kronos_exp"
    main()
""")


def one_thread(cli: Cli) -> dict[str, str]:
    return {**cli.env(), "OMP_NUM_THREADS": "1"}


def registered_weights(store, folder: Path) -> bytes:
    [version] = store.versions("kronos-tokenizer")
    mlflow.set_tracking_uri(store.tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(folder))
    return (Path(local) / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same command never killed, in this process on one thread as the killed one: its weights."""
    store = Pipeline(tmp_path_factory.mktemp("reference"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        store.run(*EARLY, fast=False)
    phase = store.by_phase()["tokenizer"]
    assert phase.data.metrics["stopped_epoch"] == 1
    return registered_weights(store, store.root / "dl")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mid_epoch", "registering"])
def test_sigkill_then_rerun_stops_where_a_run_never_killed_does(cli, reference, where, monkeypatch):
    command = cli.command(*EARLY, fast=False)
    proc = subprocess.run([sys.executable, "-c", _KILLED_AT, where, *command[3:]], cwd=cli.root,
                          env=one_thread(cli), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    killed = cli.by_phase()["tokenizer"]
    assert killed.info.status == "RUNNING"

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rerun = Pipeline(cli.root).run(*EARLY, fast=False)
    assert "tokenizer: resuming run" in rerun.stdout, rerun.stdout[-3000:]
    assert "stopped early after epoch 2/4 (patience 1)" in rerun.stdout
    new = cli.by_phase()["tokenizer"]
    assert new.data.tags["resumed_from"] == killed.info.run_id
    assert new.info.status == "FINISHED" and new.data.metrics["stopped_epoch"] == 1
    trained = cli.client().get_metric_history(new.info.run_id, "train_loss")
    if where == "registering":  # the stop was decided before the kill: the rerun trains nothing more
        assert trained == []
    else:
        assert [m.step for m in trained][-1] == 16  # the second epoch finished, no third begun
    assert registered_weights(cli, cli.root / "dl") == reference


_RANK_1_WOULD_GO_ON = textwrap.dedent("""
    import os
    from kronos_exp.train import loop
    from kronos_exp.__main__ import main

    if os.environ["RANK"] == "1":  # on its own word, rank 1 would never stop
        loop.epochs_without_improvement = lambda val_history, min_delta: 0
    main()
""")


@pytest.mark.ddp
@pytest.mark.slow
def test_every_rank_stops_at_rank_zeros_epoch_under_torchrun(cli):
    script = cli.root / "rank_1_would_go_on.py"
    script.write_text(_RANK_1_WOULD_GO_ON)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", str(script),
               *cli.command(*EARLY, "tokenizer.batch_size=4", fast=False)[3:]]
    proc = subprocess.run(command, cwd=cli.root, env=one_thread(cli), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "x 2 processes" in proc.stdout and "stopped early after epoch 2/4 (patience 1)" in proc.stdout
    runs = {r.data.tags.get("phase", "job"): r for r in cli.runs()}
    assert {k: r.info.status for k, r in runs.items()} == {"job": "FINISHED", "tokenizer": "FINISHED"}
    phase = runs["tokenizer"]
    assert phase.data.metrics["stopped_epoch"] == 1
    assert [m.step for m in cli.client().get_metric_history(phase.info.run_id, "val_loss")] == [0, 1]
