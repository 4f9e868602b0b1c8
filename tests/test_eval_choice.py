"""Every eval.metric the config accepts finishes the eval step, and the registry changes only once
the evaluation has finished: the validation score that ranks, the test report and the alias."""
from __future__ import annotations

import shutil

import pytest

from harness import PARITY, statuses

REGISTERED = "eval.predictor=models:/kronos-predictor/1"


def _version_tags(store) -> dict[str, str]:
    return dict(store.client().get_model_version("kronos-predictor", "1").tags)


@pytest.mark.parametrize("metric", ["crps", "coverage_10_90", "coverage_error"])
def test_a_probabilistic_eval_metric_finishes_and_ranks_by_its_validation_score(trained, metric):
    """These crashed the comparison against last value and drift (forecasters without sample paths)
    after the alias had moved: now those are compared on their absolute error, the published
    weights (which sample) on the metric itself."""
    done = trained.run("phases=eval", *trained.SETTINGS, REGISTERED, f"eval.metric={metric}", fast=False,
                       check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    tags = _version_tags(trained)
    assert any(k.startswith(f"eval_val_{metric}.") for k in tags)  # ranked by this metric's validation score
    assert any(k.startswith(f"eval_test_{metric}.") for k in tags)
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("vs drift") and "close_mae difference" in line for line in lines)
    assert any(line.strip().startswith("vs pretrained") and f"{metric} difference" in line for line in lines)
    assert str(trained.client().get_model_version_by_alias("kronos-predictor", "best").version) == "1"


def test_an_eval_that_fails_after_validation_leaves_the_registry_as_it_was(trained, tmp_path):
    """The published weights forecast only the test split; damaged ones fail the step after the
    validation split has chosen. Nothing it would have written reaches the registry."""
    damaged = tmp_path / "damaged"
    shutil.copytree(PARITY / "predictor", damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    before = _version_tags(trained)
    done = trained.run("phases=eval", *trained.SETTINGS, REGISTERED, f"predictor.pretrained={damaged}",
                       "eval.metric=crps", fast=False, check=False)
    assert done.returncode != 0
    assert "model.safetensors" in done.stderr.splitlines()[-1]
    assert _version_tags(trained) == before
    assert "RUNNING" not in statuses(trained)
