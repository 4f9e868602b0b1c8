"""Data layer: CSV, Parquet and Feather/Arrow files -> validated series -> leak-free, normalized windows.

    from kronos_exp.data import DataConfig, build_datasets
    splits = build_datasets(DataConfig(path="prices/*.csv"))
    x, stamp = splits.train[0]          # [L+P, 6] normalized OHLCV+amount, [L+P, 5] calendar

Modules: config (schema, DataError), frame (column names, amount rule, normalization, calendar
features), paths (which files), reading (files -> Series: CSV, with csv_scan for its bytes;
tables for Parquet/Arrow) through collect (chunks -> checked compact columns -> series) with
columns, timestamps, checks and assembly, cache (validated series kept on disk), windows (splits,
WindowDataset), sample (bundled sample generator).
"""

from .assembly import DuplicateTimestampError, Series
from .cache import default_cache_dir
from .config import NAN_POLICIES, REPAIRS, DataConfig, DataError, schema_node, validate_config
from .frame import (
    EPS,
    FEATURES,
    PRICE_COLUMNS,
    TIME_FEATURES,
    amount_from_volume,
    lookback_denormalize,
    lookback_normalize,
    time_features,
    volume_and_amount,
)
from .paths import resolve_paths
from .reading import load_series
from .windows import DataSplits, WindowDataset, build_datasets, split_sizes

__all__ = [
    "FEATURES",
    "PRICE_COLUMNS",
    "TIME_FEATURES",
    "EPS",
    "NAN_POLICIES",
    "REPAIRS",
    "DataConfig",
    "DataError",
    "DuplicateTimestampError",
    "validate_config",
    "schema_node",
    "Series",
    "load_series",
    "resolve_paths",
    "time_features",
    "amount_from_volume",
    "volume_and_amount",
    "lookback_normalize",
    "lookback_denormalize",
    "split_sizes",
    "WindowDataset",
    "DataSplits",
    "build_datasets",
    "default_cache_dir",
    "generate_sample",
    "sample_path",
]


def __getattr__(name: str):
    # Imported lazily so `python -m kronos_exp.data.sample` does not import the module twice.
    if name in ("generate_sample", "sample_path"):
        from . import sample

        return getattr(sample, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
