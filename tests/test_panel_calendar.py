"""A panel whose series start on different dates and miss bars, through `phases=all`: the splits
are calendar dates shared by every series (no series trains on a date another is tested on), and
the eval origins are dates every series forecasts from."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kronos_exp.data import DataConfig, build_datasets, sample_path


def _panel(path):
    """The bundled sample with INITECH starting 40% later and ACME missing 5 bars of its test period."""
    df = pd.read_csv(sample_path(), parse_dates=["timestamps"])
    stamps = np.sort(df.timestamps.unique())
    late = (df.symbol == "INITECH") & (df.timestamps < stamps[int(0.4 * len(stamps))])
    gap = (df.symbol == "ACME") & df.timestamps.isin(stamps[-200:-195])
    df[~late & ~gap].to_csv(path, index=False)
    return path


def _rows(split, k):
    """First and last timestamp of series k's rows in ``split``."""
    first = split.timestamps((k, 0))[0]
    last = split.timestamps((k, int(split.lengths[k]) - split.window))[-1]
    return pd.Timestamp(first), pd.Timestamp(last)


def test_a_late_series_and_missing_bars_split_and_forecast_on_shared_dates(pipeline, tmp_path):
    csv = _panel(tmp_path / "panel.csv")
    data = [f"data.path={csv}", "data.symbol_column=symbol", "data.stride=4"]
    outcome = pipeline.run("phases=all", "data=csv", *data)

    banner = dict(re.findall(r"^\s+(train|val|test)\s+(\S+ \S+) \.\. ", outcome.stdout, re.M))
    test_start = pd.Timestamp(banner["test"])
    splits = build_datasets(DataConfig(path=str(csv), symbol_column="symbol", stride=4))
    for name in ("train", "val"):  # INITECH's too, though its own rows would put its test split later
        split = getattr(splits, name)
        assert all(_rows(split, k)[1] < test_start for k in range(len(split.names)))
    assert all(_rows(splits.test, k)[0] >= test_start for k in range(len(splits.test.names)))
    assert sorted(splits.test.names) == ["ACME", "GLOBEX", "INITECH"]

    eval_run = pipeline.by_phase()["eval"]
    local = pipeline.client().download_artifacts(eval_run.info.run_id, "forecasts.csv", str(tmp_path))
    rows = pd.read_csv(local, parse_dates=["timestamp", "origin_date"])
    for split, forecasts in rows.groupby("split"):
        per_date = forecasts.groupby("origin_date").series.nunique()
        assert len(per_date) >= 2 and (per_date == 3).all(), (split, per_date)  # ACME's gap moves no date
    assert (rows[rows.split == "test"].origin_date >= test_start).all()
