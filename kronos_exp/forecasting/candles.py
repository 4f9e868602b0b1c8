"""Forecast bars a trader (and this package's own loader, data.checks) can use.

The model forecasts each of open, high, low, close, volume and amount on its own, so a raw bar can
have its high below its close or its low above its open, and a small negative volume. The forecast
command and the served model return ``valid_candles`` of it unless asked for the raw output;
``KronosPredictor.predict`` keeps the published (raw) output.
"""
from __future__ import annotations

import pandas as pd


def valid_candles(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` (open, high, low, close[, volume, amount] columns) whose bars pass
    data.checks: high raised to max(open, high, close), low lowered to min(open, low, close),
    volume and amount clipped at 0. Open and close are the model's own."""
    out = frame.copy()
    out["high"] = out[["open", "high", "close"]].max(axis=1)
    out["low"] = out[["open", "low", "close"]].min(axis=1)  # <= open <= high: high >= low too
    for column in ("volume", "amount"):
        if column in out.columns:
            out[column] = out[column].clip(lower=0)
    return out
