"""The facts every OHLCV frame obeys, in one place: column names, the amount rule, lookback
normalization, the calendar features and the band a sampled forecast reports.

Training (CSV loading, windows), forecasting (KronosPredictor) and evaluation all read these, so
a window the model was trained on and a context it forecasts from are built the same way.

    x = clip((window - mean(lookback)) / (std(lookback) + EPS), -clip, clip)
    window = x * (std + EPS) + mean       (denormalize, for forecasts)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch


PRICE_COLUMNS = ("open", "high", "low", "close")
FEATURES = PRICE_COLUMNS + ("volume", "amount")  # model input order
TIMESTAMP = "timestamps"  # canonical name of the timestamp column
TIME_FEATURES = ("minute", "hour", "weekday", "day", "month")
EPS = 1e-5  # added to the lookback std, so a constant column normalizes to 0, not NaN

_TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


def _as_float(column: Any) -> Any:
    """Integer (or boolean) columns as float64, so sums neither overflow nor round as integers."""
    return column.astype(np.float64) if np.dtype(column.dtype).kind in "iub" else column


def amount_from_volume(volume: Any, open_: Any, high: Any, low: Any, close: Any) -> Any:
    """The traded amount of bars that do not record it: volume x mean(open, high, low, close), as
    the published Kronos predictor fills it. Works on numpy arrays and pandas Series alike."""
    volume, open_, high, low, close = (_as_float(c) for c in (volume, open_, high, low, close))
    return volume * (open_ + high + low + close) / 4.0


def volume_and_amount(columns: Mapping[str, Any], rows: int) -> tuple[Any, Any]:
    """(volume, amount) of a frame that has the price columns: no ``volume`` -> both 0; no
    ``amount`` -> `amount_from_volume`. `columns` is a DataFrame or a name -> array mapping."""
    if "volume" not in columns:
        zeros = np.zeros(rows)
        return zeros, zeros
    volume = columns["volume"]
    if "amount" in columns:
        return volume, columns["amount"]
    return volume, amount_from_volume(volume, *(columns[name] for name in PRICE_COLUMNS))


def lookback_normalize(window: Any, lookback: int, clip: float, *, dtype: Any = np.float64) -> tuple[Any, Any, Any]:
    """Normalize window(s) [..., L+P, F] with the mean and population std of their first
    `lookback` rows, computed in `dtype` (float64 for training windows; float32 is what the
    published KronosPredictor uses for a forecast's context).

    `window` is a numpy array or a torch tensor (on any device); the result is of the same kind:
    (x [..., L+P, F] float32, mean [..., 1, F], std [..., 1, F]); numpy gives mean and std as
    float32, torch leaves them in `dtype` (a batch on a GPU seldom needs them: no cast kernel per
    batch). For inference pass the context as the whole window (lookback = its length).
    """
    if isinstance(window, torch.Tensor):
        w = window.to(_TORCH_DTYPES[np.dtype(dtype)])
        past = w[..., :lookback, :]
        mean, std = past.mean(dim=-2, keepdim=True), past.std(dim=-2, correction=0, keepdim=True)
        x = ((w - mean) / (std + EPS)).clamp_(-clip, clip)
        return x.float(), mean, std
    w = np.asarray(window, dtype=dtype)
    past = w[..., :lookback, :]
    mean, std = past.mean(axis=-2, keepdims=True), past.std(axis=-2, keepdims=True)
    x = (w - mean) / (std + EPS)
    np.clip(x, -clip, clip, out=x)
    return x.astype(np.float32), mean.astype(np.float32), std.astype(np.float32)


def lookback_denormalize(x: Any, mean: Any, std: Any) -> Any:
    """Normalized values back in the units of the window `mean` and `std` came from."""
    return x * (std + EPS) + mean


def time_features(timestamps: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Calendar features float32 [T, 5] in TIME_FEATURES order: minute, hour, weekday (Monday=0),
    day of month, month. Accepts datetime64 arrays, a DatetimeIndex or a Series of datetimes;
    zone-aware input gives its wall-clock time (a New York 09:30 bar is hour 9, on either side
    of a DST change), as the published Kronos code and the CSV loader do. ``out``: a float32
    [T, 5] array to write them into (returned)."""
    if isinstance(timestamps, pd.Series):
        index = pd.DatetimeIndex(timestamps.to_numpy() if timestamps.dt.tz is None else timestamps)
    else:
        index = pd.DatetimeIndex(timestamps)
    if index.tz is not None:
        index = index.tz_localize(None)  # drops the zone, keeps the local time
    if out is None:
        out = np.empty((len(index), len(TIME_FEATURES)), dtype=np.float32)
    out[:, 0] = index.minute
    out[:, 1] = index.hour
    out[:, 2] = index.day_of_week  # Monday=0
    out[:, 3] = index.day
    out[:, 4] = index.month
    return out
