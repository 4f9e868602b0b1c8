"""A search space in Hydra's own sweep syntax, read with Hydra's override parser and turned into
Optuna distributions: ``choice(a, b)`` or ``a,b`` is categorical, ``interval(lo, hi)`` a float
range (``tag(int, ...)`` for whole numbers), ``range(start, stop[, step])`` evenly spaced values
(stop excluded, as in Python); ``tag(log, ...)`` samples on a log scale. Anything that is not a
sweep is a fixed override every trial gets.

Part of the sweeper (Hydra's glue): it reads Hydra's own parser, which nothing in kronos_exp below
the pipeline imports. Optuna is imported only when a distribution is made. No ``from __future__
import annotations``: Hydra's plugin scan runs this module before it is in ``sys.modules``, where
a dataclass cannot resolve string annotations.
"""
import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from kronos_exp.errors import ConfigError


@dataclass
class SearchSpace:
    """What each trial samples (``distributions``, by override key) and what every trial is given."""
    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The command-line overrides of one trial: the fixed ones, then its sampled values."""
        return [*self.fixed, *(f"{key}={format_value(value)}" for key, value in params.items())]


def format_value(value: Any) -> str:
    """A sampled value as Hydra reads it back: numbers and plain words as they are, other text quoted."""
    if value is None:
        return "null"
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value) if isinstance(value, float) else str(value)


def search_space(params: dict[str, str] | None, arguments: list[str]) -> SearchSpace:
    """The space from ``hydra.sweeper.params`` (``{key: "<sweep>"}``) and the command line; a key
    given on the command line replaces the one in params."""
    lines = {key: f"{key}={value}" for key, value in (params or {}).items()}
    parsed = OverridesParser.create().parse_overrides([*lines.values(), *arguments])
    by_key: dict[str, Override] = {}
    for override in parsed:
        by_key[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution(key, override.value())
        else:
            space.fixed.append(override.input_line or f"{key}={override.get_value_element_as_str()}")
    return space


def distribution(key: str, sweep: Any):
    """The Optuna distribution of one parsed sweep."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    log = "log" in sweep.tags
    if isinstance(sweep, ChoiceSweep):
        bad = [v for v in sweep.list if not isinstance(v, (str, int, float, bool, type(None)))]
        if bad or log:
            raise ConfigError(f"hydra.sweeper.params.{key}: a choice takes plain values (numbers, words, null) and "
                              f"no log tag; got {sweep.list}")
        return CategoricalDistribution(sweep.list)
    if isinstance(sweep, IntervalSweep):
        if "int" in sweep.tags:
            return IntDistribution(math.ceil(sweep.start), math.floor(sweep.end), log=log)
        return FloatDistribution(sweep.start, sweep.end, log=log)
    if isinstance(sweep, RangeSweep):
        values = list(sweep.range())
        if not values:
            raise ConfigError(f"hydra.sweeper.params.{key}: range({sweep.start}, {sweep.stop}, {sweep.step}) "
                              "holds no value; its stop is excluded, as in Python")
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(values[0], values[-1], log=log, step=1 if log else sweep.step)
        return FloatDistribution(float(values[0]), float(values[-1]), log=log, step=None if log else float(sweep.step))
    raise ConfigError(f"hydra.sweeper.params.{key}: {type(sweep).__name__} is not a search space the Optuna "
                      "sweeper takes; valid: choice(...), a,b,c, interval(lo, hi), range(start, stop, step), "
                      "optionally inside tag(log, ...)")
