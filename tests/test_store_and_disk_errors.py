"""A store the program cannot write or open, a disk that fills up at the training state: one line
each, no run left RUNNING, no partial temporary file left holding the space. Run in this process
(tests/harness.py Pipeline gives the CLI's exit status and lines); the run folder's and a full
disk's through the real CLI: tests/e2e/test_disk_errors.py."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from harness import one_error_line
from kronos_exp.errors import user_message
from kronos_exp.train.state import TrainingState

QUICK = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]


def test_a_store_in_a_read_only_folder_is_one_line(pipeline, read_only):
    proc = pipeline.run(*QUICK, fast=False, check=False, tracking_uri=f"sqlite:///{read_only}/mlflow.db")
    line = one_error_line(proc)
    assert line.startswith(f"error: cannot write the MLflow store {read_only}/mlflow.db (")


def test_a_corrupted_store_is_one_line(pipeline):
    (pipeline.root / "mlflow.db").write_bytes(os.urandom(4096))
    line = one_error_line(pipeline.run(*QUICK, fast=False, check=False))
    assert line.startswith(f"error: cannot open the MLflow store {pipeline.root / 'mlflow.db'} (")
    assert "file is not a database" in line and "move it aside" in line


def test_a_disk_full_at_the_training_state_is_one_line_and_leaves_no_temp_file(pipeline, small_disk):
    line = one_error_line(pipeline.run(*QUICK, f"hydra.run.dir={small_disk}/run", fast=False, check=False))
    state = small_disk / "run" / "checkpoints" / "tokenizer.last.safetensors"
    assert line.startswith(f"error: cannot write {state}: No space left on device; free some space")
    assert sorted(r.info.status for r in pipeline.runs()) == ["FAILED", "FAILED"]
    assert sorted(p.name for p in state.parent.iterdir()) == ["tokenizer"]  # the best checkpoint alone, no .tmp


def _state(n: int) -> TrainingState:
    return TrainingState(epoch=0, batches_done=0, step=n, world_size=1, model={"w": torch.ones(n)}, optimizer={},
                         scheduler={}, scaler={}, rng={}, best_val_loss=1.0, best_epoch=0)


def test_a_full_disk_keeps_the_previous_state(small_disk):
    path = small_disk / "checkpoints" / "tokenizer.last.safetensors"
    _state(1000).save(path)
    previous = path.read_bytes()
    with pytest.raises(OSError) as err:
        _state(200_000).save(path)  # 800 kB
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name] and path.read_bytes() == previous


def test_disk_errors_name_the_file_and_other_os_errors_stay_bugs():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/x.bin")
    assert user_message(full).startswith("cannot write /data/x.bin: No space left on device;")
    assert user_message(OSError(errno.EBADF, "Bad file descriptor")) is None
