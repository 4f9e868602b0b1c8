"""Data layer: CSV files -> validated series -> leak-free, normalized windows.

    from kronos_exp.data import DataConfig, build_datasets
    splits = build_datasets(DataConfig(path="prices/*.csv"))
    x, stamp = splits.train[0]          # [L+P, 6] normalized OHLCV+amount, [L+P, 5] calendar

Modules: config (schema, DataError), loading (CSV -> Series, validation), windows (splits,
WindowDataset, time features), sample (bundled sample generator).
"""

from .config import FEATURES, NAN_POLICIES, REPAIRS, TIME_FEATURES, DataConfig, DataError, schema_node, validate_config
from .loading import Series, data_fingerprint_inputs, load_series, resolve_paths
from .windows import DataSplits, WindowDataset, build_datasets, lookback_normalize, split_sizes, time_features

__all__ = [
    "FEATURES",
    "TIME_FEATURES",
    "NAN_POLICIES",
    "REPAIRS",
    "DataConfig",
    "DataError",
    "validate_config",
    "schema_node",
    "Series",
    "load_series",
    "resolve_paths",
    "data_fingerprint_inputs",
    "time_features",
    "lookback_normalize",
    "split_sizes",
    "WindowDataset",
    "DataSplits",
    "build_datasets",
    "generate_sample",
    "sample_path",
]


def __getattr__(name: str):
    # Imported lazily so `python -m kronos_exp.data.sample` does not import the module twice.
    if name in ("generate_sample", "sample_path"):
        from . import sample

        return getattr(sample, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
