"""A search space in Hydra's own sweep syntax, read with Hydra's override parser and turned into
Optuna distributions with the meaning hydra-optuna-sweeper gives them: ``choice(a, b)`` or ``a,b``
is categorical; ``interval(lo, hi)`` a float range, whole numbers when cast (``int(interval(1, 5))``,
or this project's ``tag(int, ...)``); ``range(start, stop[, step])`` whole numbers from start to stop,
both included (floats if any of the three is a float), and ``shuffle(range(...))`` the categorical
of Python's ``range`` (stop excluded); ``tag(log, ...)`` samples an interval on a log scale. Anything
that is not a sweep is a fixed override every trial gets.

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
    fixed_values: dict[str, str] = field(default_factory=dict)  # the fixed ones' values, by key

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
            space.fixed_values[key] = override.get_value_element_as_str()
    return space


def distribution(key: str, sweep: Any):
    """The Optuna distribution of one parsed sweep; a space Optuna cannot hold is refused with its key."""
    try:
        return _distribution(key, sweep)
    except ValueError as err:  # Optuna's own check: low > high, a log scale from <= 0, ...
        raise ConfigError(f"hydra.sweeper.params.{key}: {err}") from None


def _distribution(key: str, sweep: Any):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    log = "log" in sweep.tags
    if isinstance(sweep, ChoiceSweep) or (isinstance(sweep, RangeSweep) and sweep.shuffle):
        values = sweep.list if isinstance(sweep, ChoiceSweep) else list(sweep.range())
        if log or not values:
            raise ConfigError(f"hydra.sweeper.params.{key}: a choice takes plain values and no log tag; got {values}")
        return CategoricalDistribution([encode(v) for v in values])
    if isinstance(sweep, IntervalSweep):
        if "int" in sweep.tags:  # this project's tag(int, ...): the whole numbers inside
            return IntDistribution(math.ceil(sweep.start), math.floor(sweep.end), log=log)
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):  # int(interval(...))
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(sweep.start, sweep.end, log=log)
    if isinstance(sweep, RangeSweep):
        bounds = (sweep.start, sweep.stop, sweep.step)
        if any(isinstance(v, float) for v in bounds):
            return FloatDistribution(*map(float, bounds[:2]), step=float(sweep.step))
        return IntDistribution(sweep.start, sweep.stop, step=sweep.step)
    raise ConfigError(f"hydra.sweeper.params.{key}: {type(sweep).__name__} is not a search space the Optuna "
                      "sweeper takes; valid: choice(...), a,b,c, interval(lo, hi), int(interval(lo, hi)), "
                      "range(start, stop, step), shuffle(range(...)), optionally inside tag(log, ...)")


def encode(value: Any) -> Any:
    """A choice's value as Optuna stores it: plain values as they are, others (lists, dicts) as the
    text Hydra reads back."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return Override._get_value_element_as_str(value)
