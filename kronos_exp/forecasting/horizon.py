"""The timestamps of a forecast's horizon, for the pyfunc model and the forecast command alike."""
from __future__ import annotations

import pandas as pd


def future_timestamps(timestamps: pd.Series | pd.DatetimeIndex, pred_len: int, freq: str = "") -> pd.DatetimeIndex:
    """``pred_len`` timestamps after the last one: every ``freq`` (a pandas offset such as ``5min``
    or ``1D``), or, with no ``freq``, every median step of the history."""
    index = pd.DatetimeIndex(timestamps)
    if freq:
        return pd.date_range(start=index[-1], periods=pred_len + 1, freq=freq)[1:]
    step = pd.Series(index).diff().median()  # NaT for a single timestamp
    if pd.isna(step) or step <= pd.Timedelta(0):
        raise ValueError("cannot infer the forecast timestamps: the history needs at least two increasing "
                         "timestamps, or pass the freq param (e.g. freq=5min)")
    return pd.DatetimeIndex([index[-1] + step * (k + 1) for k in range(pred_len)])
