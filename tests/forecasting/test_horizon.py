"""The timestamps of a forecast's horizon (forecasting.horizon), for the pyfunc model and the forecast command."""
from __future__ import annotations

import pandas as pd
import pytest

from kronos_exp.forecasting.horizon import future_timestamps


def test_future_timestamps_follow_the_median_step():
    history = pd.DatetimeIndex(["2024-01-01 09:30", "2024-01-01 09:35", "2024-01-01 09:40", "2024-01-02 09:30"])
    assert list(future_timestamps(history, 2)) == [pd.Timestamp("2024-01-02 09:35"), pd.Timestamp("2024-01-02 09:40")]


def test_future_timestamps_with_a_frequency():
    history = pd.DatetimeIndex(["2024-01-01", "2024-01-02"])
    assert list(future_timestamps(history, 2, "1h")) == [pd.Timestamp("2024-01-02 01:00"), pd.Timestamp("2024-01-02 02:00")]


def test_one_timestamp_needs_a_frequency():
    with pytest.raises(ValueError, match="freq"):
        future_timestamps(pd.DatetimeIndex(["2024-01-01"]), 3)
