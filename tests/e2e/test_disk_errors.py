"""Folders and stores the program cannot write, or a full disk: one line each, no run left RUNNING,
no partial temporary file left holding the space."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest
import torch

from kronos_exp.errors import user_message
from kronos_exp.train.state import TrainingState

QUICK = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]


def _mount_tmpfs(folder, options: str):
    """A small or read-only tmpfs (needs root; CI runners without it skip)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    return folder


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "read_only"
    if os.geteuid() != 0:  # permissions stop everyone but root
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    yield _mount_tmpfs(folder, "size=1M,ro")
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    folder = _mount_tmpfs(tmp_path / "full", "size=96k")  # room for Hydra's files, not for a checkpoint
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    folder = _mount_tmpfs(tmp_path / "small", "size=400k")  # room for the best checkpoint, not for the state
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def _one_line_error(proc) -> str:
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_an_unwritable_run_folder_is_one_line(cli, read_only):
    line = _one_line_error(cli.run(*QUICK, f"hydra.run.dir={read_only}/run", fast=False, check=False))
    assert line.startswith(f"error: cannot write the run folder {read_only}/run (")
    assert "hydra.run.dir=" in line


def test_a_store_in_a_read_only_folder_is_one_line(cli, read_only):
    command = cli.command(*QUICK, fast=False)[:-1] + [f"mlflow.tracking_uri=sqlite:///{read_only}/mlflow.db"]
    proc = subprocess.run(command, cwd=cli.root, env=cli.env(), capture_output=True, text=True, timeout=300)
    line = _one_line_error(proc)
    assert line.startswith(f"error: cannot write the MLflow store {read_only}/mlflow.db (")


def test_a_corrupted_store_is_one_line(cli):
    (cli.root / "mlflow.db").write_bytes(os.urandom(4096))
    line = _one_line_error(cli.run(*QUICK, fast=False, check=False))
    assert line.startswith(f"error: cannot open the MLflow store {cli.root / 'mlflow.db'} (")
    assert "file is not a database" in line and "move it aside" in line


def test_a_full_disk_is_one_line_and_leaves_no_run_running(cli, full_disk):
    line = _one_line_error(cli.run(*QUICK, f"hydra.run.dir={full_disk}/run", fast=False, check=False))
    assert line.startswith(f"error: cannot write {full_disk}/run/checkpoints/tokenizer/model.safetensors: "
                           "No space left on device")
    assert sorted(r.info.status for r in cli.runs()) == ["FAILED", "FAILED"]
    assert not list((full_disk / "run" / "checkpoints").iterdir())  # no half-written checkpoint


def test_a_disk_full_at_the_training_state_is_one_line_and_leaves_no_temp_file(cli, small_disk):
    line = _one_line_error(cli.run(*QUICK, f"hydra.run.dir={small_disk}/run", fast=False, check=False))
    state = small_disk / "run" / "checkpoints" / "tokenizer.last.safetensors"
    assert line.startswith(f"error: cannot write {state}: No space left on device; free some space")
    assert sorted(r.info.status for r in cli.runs()) == ["FAILED", "FAILED"]
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
