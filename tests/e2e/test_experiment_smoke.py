"""``python -m kronos_exp experiment=smoke`` trains both phases on the CPU in seconds, under its
own experiment and model names."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_smoke_preset_runs_through_the_cli(cli):
    cli.run("experiment=smoke", fast=False)
    assert cli.runs() == []  # nothing in the default experiment
    runs = cli.runs("kronos_exp_smoke")
    assert sorted(r.data.tags.get("phase", "job") for r in runs) == ["job", "predictor", "tokenizer"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(cli.versions("smoke-tokenizer")) == len(cli.versions("smoke-predictor")) == 1
