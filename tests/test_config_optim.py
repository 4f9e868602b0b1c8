"""Optimizer and scheduler configs validate at compose time: a typo or a wrong type in them stops
the run before any work, as for every other setting."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import resolve, unknown_keys
from kronos_exp.errors import ConfigError

PHASES = ["tokenizer", "predictor"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("overrides", [
    ["predictor.scheduler.warmpu=0.1"],
    ["scheduler@predictor.scheduler=cosine", "predictor.scheduler.div_factor=5"],  # a key of the other schedule
    ["tokenizer.optimizer.betas=abc"],
    ["predictor.scheduler.div_factor=ten"],
])
def test_typos_and_wrong_types_fail_at_compose_time(overrides):
    with pytest.raises(ConfigCompositionException):
        _compose(*overrides)


def test_a_key_added_with_plus_to_a_schedule_is_refused_before_any_work():
    cfg = _compose("scheduler@tokenizer.scheduler=cosine", "+tokenizer.scheduler.warmpu=0.1")
    with pytest.raises(ConfigError, match=r"unknown key tokenizer.scheduler.warmpu;.*min_lr_ratio"):
        resolve(cfg)
    assert len(unknown_keys(cfg)) == 1


def test_the_chosen_schedule_settings_are_range_checked_and_the_others_ignored():
    bad = ("scheduler@predictor.scheduler=cosine", "predictor.scheduler.min_lr_ratio=1.5")
    resolve(_compose(*bad, "phases=tokenizer"))
    with pytest.raises(ConfigError, match=r"^predictor.scheduler.min_lr_ratio=1.5; valid: a number in \[0, 1\]$"):
        resolve(_compose(*bad, "phases=both"))
    resolve(_compose("scheduler@predictor.scheduler=cosine", "phases=both"))  # no div_factor to check: fine


def test_optimizer_values_follow_the_phase_keys_users_and_sweeps_set():
    cfg = _compose("predictor.lr=3e-4", "predictor.adam_beta1=0.8", "tokenizer.weight_decay=0.02",
                   "tokenizer.pct_start=0.2")
    predictor, tokenizer = (OmegaConf.to_container(cfg[p], resolve=True) for p in ("predictor", "tokenizer"))
    assert predictor["optimizer"]["lr"] == predictor["scheduler"]["max_lr"] == 3e-4
    assert predictor["optimizer"]["betas"] == [0.8, 0.95]
    assert tokenizer["optimizer"]["weight_decay"] == 0.02 and tokenizer["scheduler"]["pct_start"] == 0.2
