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
        "tokenizer.epochs": IntDistribution(1, 5), "seed": IntDistribution(1, 9)}


def test_the_command_line_replaces_a_key_and_fixed_values_go_to_every_trial():
    space = search_space({"predictor.lr": "interval(1e-4, 1e-3)"}, ["predictor.lr=choice(1e-3, 5)", "phases=predictor"])
    assert space.distributions == {"predictor.lr": CategoricalDistribution([1e-3, 5])}
    assert space.overrides({"predictor.lr": 5}) == ["phases=predictor", "predictor.lr=5"]


def test_values_read_back_as_they_were_sampled():
    assert [format_value(v) for v in (0.001, 3, "adamw", None, "a b")] == ["0.001", "3", "adamw", "null", "'a b'"]


def test_an_empty_range_is_refused_with_its_key():
    with pytest.raises(ConfigError, match="predictor.epochs: `low <= high` must hold"):
        search_space({"predictor.epochs": "range(3, 1)"}, [])


@pytest.mark.parametrize("sweep, expected", [  # hydra-optuna-sweeper's meaning of each (issue 28, item 1)
    ("int(interval(1, 5))", IntDistribution(1, 5)),
    ("tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("interval(1, 5)", FloatDistribution(1.0, 5.0)),
    ("range(1, 3)", IntDistribution(1, 3)),
    ("range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1.0)),
    ("range(-5.5, 5.5, step=0.5)", FloatDistribution(-5.5, 5.5, step=0.5)),
    ("shuffle(range(1, 4))", CategoricalDistribution([1, 2, 3])),
])
def test_the_sweep_syntax_means_what_it_means_in_hydra_optuna_sweeper(sweep, expected):
    got = search_space({"x": sweep}, []).distributions["x"]
    assert got == expected if not isinstance(expected, CategoricalDistribution) else \
        sorted(got.choices) == sorted(expected.choices)
