"""The sweeper's sampler, built from its ``_target_`` node (``hydra.sweeper.sampler``), and the
``custom_search_space`` hook, as hydra-optuna-sweeper configures them. A config is untrusted
input: only classes of ``optuna.samplers`` are built, and the hook must be a function.
"""
from typing import Any, Callable, Optional

from kronos_exp.errors import ConfigError, first_line
from kronos_exp.search.study import check_target


def build_sampler(node: dict[str, Any], seed_offset: int, distributions: dict[str, Any]):
    """The sampler ``node`` asks for; its seed (when given) plus ``seed_offset`` (each search
    process of a shared study its own); the grid sampler's grid is the search space. Arguments
    left null are Optuna's own defaults."""
    from hydra.utils import instantiate

    name, _ = check_target("sweeper.sampler", node, "optuna.samplers")
    node = {k: v for k, v in node.items() if v is not None}
    if "seed" in node:
        node["seed"] = int(node["seed"]) + seed_offset
    try:
        sampler = instantiate(node, _convert_="all")
        if name == "GridSampler":
            grid = grid_of(distributions)
            sampler = sampler(grid) if callable(sampler) and not hasattr(sampler, "sample_relative") else sampler
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a wrong argument: hydra wraps Optuna's TypeError
        raise ConfigError(f"hydra.sweeper.sampler: optuna.samplers.{name} refused its arguments "
                          f"({first_line(err.__cause__ or err)})") from None
    return sampler


def grid_of(distributions: dict[str, Any]) -> dict[str, list[Any]]:
    """Every value of each parameter: a choice's, a stepped range's; a continuous one has no grid."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: dict[str, list[Any]] = {}
    for key, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[key] = [dist.low + i * dist.step for i in range(count)]
        else:
            raise ConfigError(f"hydra.sweeper.params.{key}: the grid sampler takes choices and ranges with a step; "
                              f"{key} is continuous ({dist})")
    return grid


def custom_search_space(path: Optional[str]) -> Optional[Callable[[Any, Any], Any]]:
    """``hydra.sweeper.custom_search_space``: the dotted path of a function ``(cfg, trial)`` that
    suggests more parameters (a leading dot: a module beside the app)."""
    if not path:
        return None
    from hydra.utils import get_method

    try:
        return get_method(path.lstrip("."))
    except Exception as err:  # noqa: BLE001 - not importable, not a function
        raise ConfigError(f"hydra.sweeper.custom_search_space={path}: {first_line(err)}; give "
                          "<module>.<function>, a function (cfg, trial) on the app's path") from None
