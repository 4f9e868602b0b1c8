"""The sweeper's sampler and pruner as ``_target_`` nodes, as hydra-optuna-sweeper configures them
(issue 28, item 1): only optuna's own classes are built, a seed is offset per search process, and
kronos_exp's own search keeps its stored study while a bare one is in memory."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution

from harness import compose
from hydra_plugins.kronos_optuna_sweeper.samplers import build_sampler
from kronos_exp.errors import ConfigError
from kronos_exp.search.study import make_pruner


def _draws(sampler) -> list[int]:
    study = optuna.create_study(sampler=sampler)
    return [study.ask({"x": IntDistribution(0, 10 ** 6)}).params["x"] for _ in range(3)]


def test_a_sampler_node_is_built_with_its_arguments_and_its_seed_plus_the_worker_index():
    built = build_sampler({"_target_": "optuna.samplers.RandomSampler", "seed": 123}, 2, {})
    assert _draws(built) == _draws(optuna.samplers.RandomSampler(seed=125))
    tpe = build_sampler({"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 5}, 0, {})
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 5


def test_the_grid_sampler_takes_its_grid_from_the_search_space():
    space = {"x": IntDistribution(0, 2), "y": CategoricalDistribution(["a", "b"])}
    grid = build_sampler({"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": 1}, 0, space)
    assert isinstance(grid, optuna.samplers.GridSampler) and len(grid._all_grids) == 6


@pytest.mark.parametrize("node", [{"_target_": "os.system"}, {"_target_": "optuna.samplers.Nope"}, {}])
def test_a_sampler_outside_optuna_samplers_is_refused_in_one_line(node):
    with pytest.raises(ConfigError, match=r"hydra.sweeper.sampler._target_=.*; valid: optuna.samplers.<name> \("):
        build_sampler(node, 0, {})


def test_a_pruner_is_a_name_or_a_node_under_optuna_pruners():
    assert isinstance(make_pruner({"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0}, 0, 0),
                      optuna.pruners.PercentilePruner)
    assert isinstance(make_pruner("median", 2, 0), optuna.pruners.MedianPruner)
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner._target_=builtins.exec"):
        make_pruner({"_target_": "builtins.exec"}, 0, 0)


def test_kronos_exps_search_keeps_its_stored_study_while_a_bare_sweeper_is_in_memory():
    assert compose("hparams_search=optuna").hydra.sweeper.storage == "beside_mlflow"
    bare = compose("hydra/sweeper=kronos_optuna").hydra.sweeper
    assert bare.storage is None and bare.max_failure_rate == 0.0 and bare.sampler._target_.endswith("TPESampler")
