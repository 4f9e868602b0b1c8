"""The data section of the config: the schema Hydra validates, and the checks types cannot express.

`DataConfig` is a Hydra structured-config schema, so it only uses types OmegaConf supports
(str, int, float, bool, Optional, List[str], Dict[str, str]). Hydra rejects `data.stride=abc`
at compose time; the cross-field rules (ratios summing to 1, a known NaN policy, ...) are
checked by `validate_config`, which every entry point of this package calls before reading
any file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import UserError
from ..window import WindowSpec

NAN_POLICIES = ("ffill", "drop", "error")
REPAIRS = ("none", "clip")


class DataError(UserError, ValueError):
    """A problem with the user's data or data config.

    The message names the file, the column and the row (1-based line number in the file, or the
    timestamp) and says what would be valid.
    """


@dataclass
class DataConfig:
    # Inputs: one file (CSV, Parquet, Feather/Arrow), a glob or a folder (`path`), or an explicit list
    # (`paths`, used when non-empty).
    # path=None and paths=[] means the bundled sample (kronos_exp/data/bundled/sample_5min.csv).
    path: Optional[str] = None
    paths: List[str] = field(default_factory=list)
    # A column whose values split one file into several series (e.g. "symbol", "ticker").
    symbol_column: Optional[str] = None
    # None: auto-detect among timestamps/timestamp/datetime/date/time (case-insensitive).
    timestamp_column: Optional[str] = None
    # strftime format for the timestamp column, e.g. "%d/%m/%Y %H:%M"; None: inferred.
    timestamp_format: Optional[str] = None
    # Dates like 02/01/2024: True reads 2 January, False 1 February; None: detected from the file's
    # other dates (e.g. 13/01/2024), an error when none tells. Not used with timestamp_format.
    dayfirst: Optional[bool] = None
    # User column name -> canonical name (timestamps/open/high/low/close/volume/amount).
    column_map: Dict[str, str] = field(default_factory=dict)
    # Missing values in the feature columns: ffill (forward fill), drop (the row), error.
    nan_policy: str = "ffill"
    # Bars with high < low or open/close outside [low, high]: none (an error), clip (swap high and
    # low, clip open and close into the bar, with a warning that counts them).
    repair: str = "none"
    # Windows: lookback rows are the model's context, predict rows the forecast horizon.
    lookback_window: int = 64
    predict_window: int = 16
    # Split by time on the panel's one calendar (every series' timestamps together): the first train_ratio
    # of it is train, then val, then test, so no series trains on dates another is tested on.
    train_ratio: float = 0.8
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    # Normalized values are clipped to [-clip, clip] (the published models': kronos_exp.window).
    clip: float = WindowSpec.clip
    # Step between consecutive window starts.
    stride: int = 1
    # Cap on windows per epoch (deterministic even subsampling); None keeps all.
    max_train_windows: Optional[int] = None
    max_eval_windows: Optional[int] = None  # applies to val and to test
    # Keep the validated series in outputs/cache/series and read them from there while the files
    # and the reading settings are unchanged (data/cache.py); false: read the files every time.
    cache: bool = True


MISSING = "???"  # OmegaConf's marker of a mandatory value


def schema_node() -> DataConfig:
    """The node to register as the Hydra schema of the `data` group.

    Its `path` is MISSING: OmegaConf's merge never lets a `???` in a yaml replace an existing
    value, so `path: ???` in conf/data/csv.yaml only makes Hydra report "Missing mandatory value:
    data.path" when the schema's own default is MISSING too. conf/data/sample.yaml sets
    `path: null` (the bundled sample). In Python, `DataConfig()` keeps path=None (the sample).
    """
    return DataConfig(path=MISSING)


_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}


def _to_plain(settings: DataConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A DataConfig (what the pipeline hands down, resolved) or a mapping of its fields as a plain dict."""
    if isinstance(settings, DataConfig):
        return dataclasses.asdict(settings)
    if isinstance(settings, Mapping):
        return dict(settings)
    raise TypeError(f"expected a DataConfig or a mapping of its fields, got {type(settings).__name__}")


def validate_config(settings: DataConfig | Mapping[str, Any]) -> DataConfig:
    """Check `settings` (a DataConfig or a mapping of its fields) and return it as a `DataConfig`.

    Raises DataError naming each offending field and value (every one found, one per line).
    """
    raw = _to_plain(settings)
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise DataError(f"unknown data config field(s) {unknown}; valid fields: {sorted(_FIELDS)}")
    if raw.get("path") == MISSING:  # data=csv left data.path unset
        if not raw.get("paths"):
            raise DataError("data.path is required: set data.path=<file.csv, glob or folder> (or data.paths=[...])")
        raw["path"] = None
    c = DataConfig(**raw)
    c.paths = list(c.paths or [])
    c.column_map = {str(k): str(v) for k, v in dict(c.column_map or {}).items()}
    problems = _problems(c)
    if problems:
        raise DataError("\n".join(problems) if len(problems) == 1 else
                        f"{len(problems)} data settings cannot work:\n" + "\n".join(f"  - {p}" for p in problems))
    return c


def _problems(c: DataConfig) -> list[str]:
    problems = []
    if c.nan_policy not in NAN_POLICIES:
        problems.append(f"data.nan_policy={c.nan_policy!r} is not valid; use one of {', '.join(NAN_POLICIES)}")
    if c.repair not in REPAIRS:
        problems.append(f"data.repair={c.repair!r} is not valid; use one of {', '.join(REPAIRS)}")
    if c.dayfirst is not None and c.timestamp_format is not None:
        problems.append(
            f"data.dayfirst={str(c.dayfirst).lower()} and data.timestamp_format={c.timestamp_format!r} are both set; "
            "the format already fixes the date order: set only one")
    for name in ("lookback_window", "predict_window", "stride"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"data.{name}={value!r} is not valid; it must be an integer >= 1")
    for name in ("max_train_windows", "max_eval_windows"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"data.{name}={value!r} is not valid; use null (all windows) or an integer >= 1")
    if not isinstance(c.cache, bool):
        problems.append(f"data.cache={c.cache!r} is not valid; use true or false")
    if not c.clip > 0:
        problems.append(f"data.clip={c.clip!r} is not valid; it must be > 0")
    ratios = {"train_ratio": c.train_ratio, "val_ratio": c.val_ratio, "test_ratio": c.test_ratio}
    shown = ", ".join(f"{k}={v}" for k, v in ratios.items())
    total = sum(ratios.values())
    if not (c.train_ratio > 0 and c.val_ratio > 0 and c.test_ratio >= 0):
        problems.append(f"data split ratios: train_ratio and val_ratio must be > 0 and test_ratio >= 0 "
                        f"(0: no test split); got {shown}")
    elif abs(total - 1.0) > 1e-6:
        problems.append(f"data split ratios must sum to 1; got {shown} (sum {total:.6g})")
    return problems
