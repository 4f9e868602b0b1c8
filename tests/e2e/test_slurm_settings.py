"""The SLURM launcher's settings, checked before a job is submitted (issue 28, item 5): a time limit
no longer than SLURM's warning before it would stop and requeue every job as it starts."""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e]


def test_a_time_limit_within_the_warning_is_refused_before_anything_is_submitted(cli):
    proc = cli.run("-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=2",
                   "predictor.lr=1e-4,2e-4", fast=False, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert errors == [
        "error: hydra.launcher.timeout_min=2 (120 s) is not longer than hydra.launcher.signal_delay_s=120, SLURM's "
        "warning before the time limit: every job would be stopped and requeued as it starts; set timeout_min "
        "above 2 or signal_delay_s below 120"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(Path(cli.root).rglob(".submitit")) and cli.runs() == []  # nothing submitted, no sweep run
