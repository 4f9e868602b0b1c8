"""What a run returns to sweepers: which metrics (``objective``, else the last phase's own) and
which way each improves. It reads three settings (``objective``, ``phases``, ``eval.metric``) of a
composed config or a resolved RunConfig alike, so the sweeper, the sweep table and the pipeline
share one rule without importing Hydra."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .metric_names import COVERAGE, COVERAGE_ERROR, maximised


def objective_metrics(config: Any) -> list[str]:
    """The metrics a run returns to sweepers: ``objective`` (one name or a list), else the last
    phase's own (its ``<phase>_val_loss``; ``eval_val_<eval.metric>``, on the validation split, for
    the eval phase)."""
    objective = config.objective
    if objective is not None:
        names = [objective] if isinstance(objective, str) else list(objective)
        if not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"objective={objective}; valid: a metric name, a list of them ([a,b]), or null")
        return names
    last = list(config.phases or {"": None})[-1]
    return [f"eval_val_{config.eval.metric}" if last == "eval" else f"{last}_val_loss"]


def several_objectives(config: Any) -> bool:
    """Whether the run returns a list of values (``objective`` given as a list)."""
    return config.objective is not None and not isinstance(config.objective, str)


def objective_directions(config: Any) -> list[str]:
    """``maximize`` or ``minimize`` for each objective metric: which way it improves, for the
    sweepers (the Optuna sweeper's ``hydra.sweeper.direction`` when null, the sweep's job table)."""
    directions = []
    for name in objective_metrics(config):
        better = maximised(name)
        if better is None:
            raise ConfigError(f"objective={name} has no better direction (a calibrated 10-90% band covers 80%, so "
                              f"neither more nor less coverage is better); use objective={coverage_error(name)}, its "
                              "distance from 80%, which is minimised")
        directions.append("maximize" if better else "minimize")
    return directions


def coverage_error(name: str) -> str:
    """``eval_val_coverage_10_90`` -> ``eval_val_coverage_error``."""
    return name[:-len(COVERAGE)] + COVERAGE_ERROR


def refusal_of_test_split(name: str) -> ConfigError | None:
    """A test-split objective is refused: the test split reports and never chooses."""
    if not name.startswith("eval_test_"):
        return None
    return ConfigError(f"objective={name} is measured on the test split, which reports and never chooses (a search "
                       "that chose by it would report an optimistic test error); use the validation split's "
                       f"objective={name.replace('eval_test_', 'eval_val_', 1)}")


def objective_direction(config: Any) -> str | list[str]:
    """The direction of a single objective, or the list of them for several."""
    directions = objective_directions(config)
    return directions[0] if len(directions) == 1 else directions
