"""Helpers for the data tests: small OHLCV frames written as CSV in tmp_path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def ohlcv_frame(n: int = 200, start: str = "2024-01-02 09:30", freq: str = "5min", seed: int = 0) -> pd.DataFrame:
    """A consistent random-walk OHLCV frame with columns timestamps, open, high, low, close, volume, amount."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, n))
    volume = rng.integers(1000, 5000, n).astype(float)
    return pd.DataFrame(
        {
            "timestamps": pd.date_range(start, periods=n, freq=freq),
            "open": open_.round(4),
            "high": high.round(4),
            "low": low.round(4),
            "close": close.round(4),
            "volume": volume,
            "amount": (volume * close).round(2),
        }
    )


@pytest.fixture
def frame():
    return ohlcv_frame


@pytest.fixture
def write_csv(tmp_path):
    """write_csv(name, text_or_frame) -> str path of a CSV in tmp_path."""

    def write(name: str, content) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        else:
            path.write_text(content)
        return str(path)

    return write
