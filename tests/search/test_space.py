"""Hydra's sweep syntax as an Optuna search space (the sweeper's space module)."""
from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from kronos_exp.errors import ConfigError
from hydra_plugins.kronos_optuna_sweeper.space import format_value, search_space


def test_each_sweep_kind_becomes_its_distribution():
    space = search_space({"predictor.lr": "tag(log, interval(2e-4, 5e-3))", "predictor.epochs": "choice(1, 2, 3)",
                          "tokenizer.epochs": "range(1, 5)", "seed": "tag(int, interval(1, 9))"}, [])
    assert space.distributions == {
        "predictor.lr": FloatDistribution(2e-4, 5e-3, log=True), "predictor.epochs": CategoricalDistribution([1, 2, 3]),
        "tokenizer.epochs": IntDistribution(1, 4), "seed": IntDistribution(1, 9)}


def test_the_command_line_replaces_a_key_and_fixed_values_go_to_every_trial():
    space = search_space({"predictor.lr": "interval(1e-4, 1e-3)"}, ["predictor.lr=choice(1e-3, 5)", "phases=predictor"])
    assert space.distributions == {"predictor.lr": CategoricalDistribution([1e-3, 5])}
    assert space.overrides({"predictor.lr": 5}) == ["phases=predictor", "predictor.lr=5"]


def test_values_read_back_as_they_were_sampled():
    assert [format_value(v) for v in (0.001, 3, "adamw", None, "a b")] == ["0.001", "3", "adamw", "null", "'a b'"]


def test_an_empty_range_is_refused_with_its_key():
    with pytest.raises(ConfigError, match="predictor.epochs: range\\(3, 3, 1\\) holds no value"):
        search_space({"predictor.epochs": "range(3, 3)"}, [])
