"""A run folder the program cannot write, a full disk: one line each from the real CLI (the folder's
is checked by a Hydra callback before the run starts), no run left RUNNING, no partial checkpoint.
Stores that cannot be written or opened, and a disk full at the training state, in process:
tests/test_store_and_disk_errors.py. The folders come from tests/conftest.py (read_only, full_disk)."""
from __future__ import annotations

import pytest

from harness import one_error_line

pytestmark = pytest.mark.e2e

QUICK = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]


def test_an_unwritable_run_folder_is_one_line(cli, read_only):
    line = one_error_line(cli.run(*QUICK, f"hydra.run.dir={read_only}/run", fast=False, check=False))
    assert line.startswith(f"error: cannot write the run folder {read_only}/run (")
    assert "hydra.run.dir=" in line


def test_a_full_disk_is_one_line_and_leaves_no_run_running(cli, full_disk):
    line = one_error_line(cli.run(*QUICK, f"hydra.run.dir={full_disk}/run", fast=False, check=False))
    assert line.startswith(f"error: cannot write {full_disk}/run/checkpoints/tokenizer/model.safetensors: "
                           "No space left on device")
    assert sorted(r.info.status for r in cli.runs()) == ["FAILED", "FAILED"]
    assert not list((full_disk / "run" / "checkpoints").iterdir())  # no half-written checkpoint

