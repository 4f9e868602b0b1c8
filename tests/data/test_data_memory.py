"""What the CLI's data step holds and says: the rows once (series and splits share one panel),
windows equal to those of the per-series constructor, and the step's seconds in its log line."""

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from kronos_exp.data import DataConfig, WindowDataset, build_datasets, time_features
from kronos_exp.data.windows import Calendar


def _panel_config(write_csv, frame, shared: bool = False, **kw) -> DataConfig:
    """Three series, one starting late enough to join train and val only (as in test_data_windows);
    ``shared``: six series of the same 60 dates (their calendar features are looked up per date)."""
    paths, starts = [], ["2024-01-02 09:30", "2024-01-02 10:45", "2024-01-02 09:30"]
    for k, n in enumerate([60] * 6 if shared else [60, 75, 90]):
        paths.append(write_csv(f"s{k}.csv", frame(n, start="2024-01-05 21:30" if shared else starts[k], seed=k)))
    base = dict(paths=paths, lookback_window=5, predict_window=3, train_ratio=0.5, val_ratio=0.25, test_ratio=0.25)
    return DataConfig(**{**base, **kw})


def test_splits_and_series_hold_the_rows_once(write_csv, frame):
    """Each series' values and timestamps are views of the arrays its split windows read, and the
    three splits read one set of arrays: no second copy of the panel beside the series."""
    splits = build_datasets(_panel_config(write_csv, frame))
    for split in (splits.train, splits.val, splits.test):
        assert split._values is splits.train._values and split._stamps is splits.train._stamps
    for s in splits.series:
        assert np.shares_memory(s.values, splits.train._values)
        assert np.shares_memory(s.timestamps, splits.train._timestamps)
    assert splits.train._values.nbytes == sum(s.values.nbytes for s in splits.series)


@pytest.mark.parametrize("shared", [False, True])
def test_panel_windows_equal_the_per_series_constructor(write_csv, frame, shared):
    """Items, batches, raw rows, timestamps, origin dates and the device batch of every split are
    those of WindowDataset built from each series' rows of the split (what build_datasets did)."""
    c = _panel_config(write_csv, frame, shared, stride=2, max_train_windows=23)
    splits = build_datasets(c)
    calendar = Calendar.of(splits.series, c)
    caps = {"train": c.max_train_windows, "val": None, "test": None}
    for name in ("train", "val", "test"):
        got = getattr(splits, name)
        parts = {"values": [], "stamps": [], "timestamps": [], "names": []}
        for s in splits.series:
            if s.name not in got.names:
                continue
            b = calendar.bounds(s.timestamps)
            lo, hi = b[("train", "val", "test").index(name)], b[("train", "val", "test").index(name) + 1]
            parts["values"].append(s.values[lo:hi].copy())
            parts["stamps"].append(time_features(s.timestamps[lo:hi]))
            parts["timestamps"].append(s.timestamps[lo:hi].copy())
            parts["names"].append(s.name)
        want = WindowDataset(parts["values"], parts["stamps"], c.lookback_window, c.predict_window, clip=c.clip,
                             stride=c.stride, max_windows=caps[name], names=parts["names"],
                             timestamps=parts["timestamps"])
        assert len(got) == len(want) > 0 and got.names == want.names
        np.testing.assert_array_equal(got.index, want.index)
        np.testing.assert_array_equal(got.lengths, want.lengths)
        assert got.total_windows == want.total_windows
        for i in range(len(got)):
            for a, b in zip(got[i], want[i]):
                assert torch.equal(a, b)
            np.testing.assert_array_equal(got.raw(i), want.raw(i))
            np.testing.assert_array_equal(got.timestamps(i), want.timestamps(i))
        for k in range(len(got.lengths)):
            np.testing.assert_array_equal(got.origin_dates(k), want.origin_dates(k))
            np.testing.assert_array_equal(got.starts(k), want.starts(k))
        idx = list(range(len(got)))[::-1]
        for a, b in zip(got.batch(idx), want.batch(idx)):
            assert torch.equal(a, b)
        on, ref = got.on("cpu"), want.on("cpu")
        assert torch.equal(on.values, ref.values) and torch.equal(on.stamps, ref.stamps)
        for a, b in zip(on.batch(idx), ref.batch(idx)):
            assert torch.equal(a, b)


def test_time_features_into_a_given_array():
    ts = np.array(["2024-03-15 09:35", "2024-12-29 23:59"], dtype="datetime64[ns]")
    out = np.full((3, 5), -1, dtype=np.float32)
    assert time_features(ts, out=out[1:]) is not None
    np.testing.assert_array_equal(out, [[-1] * 5, [35, 9, 4, 15, 3], [59, 23, 6, 29, 12]])


@pytest.mark.parametrize("shared", [False, True])
def test_calendar_dates_are_the_sorted_union(write_csv, frame, shared):
    c = _panel_config(write_csv, frame, shared)
    splits = build_datasets(c)
    union = np.unique(np.concatenate([s.timestamps for s in splits.series]))
    np.testing.assert_array_equal(Calendar.of(splits.series, c).dates, union)


def test_the_data_line_says_how_long_the_step_took(write_csv, frame, caplog):
    with caplog.at_level(logging.INFO, logger="kronos_exp.data"):
        build_datasets(_panel_config(write_csv, frame))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: 3 series")]
    assert " from 3 file(s) in " in line and " s, rows {" in line


def test_parquet_reads_only_the_columns_it_uses(tmp_path, frame, monkeypatch):
    """An extra wide column of the file is never read (or decoded) by the Parquet reader."""
    df = frame(200)
    df["notes"] = ["x" * 100] * len(df)
    path = tmp_path / "a.parquet"
    df.to_parquet(path, index=False)
    asked = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        asked.append(columns)
        return real(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    splits = build_datasets(DataConfig(path=str(path), lookback_window=8, predict_window=4))
    assert asked and all(cols is not None and "notes" not in cols for cols in asked)
    assert len(splits.series[0]) == 200



@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_files_series_are_views_of_one_block_each(tmp_path, frame, suffix):
    """The reader puts a file's series end to end in one values and one timestamps array (two large
    blocks the system gets back whole), in series order; build_datasets then uses them as they are."""
    from kronos_exp.data import load_series
    from kronos_exp.data.digest import file_sha256

    df = pd.concat([frame(60, seed=k).assign(symbol=f"S{k}") for k in range(3)], ignore_index=True)
    path = tmp_path / f"a{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    c = DataConfig(path=str(path), symbol_column="symbol", lookback_window=5, predict_window=3, train_ratio=0.6,
                   val_ratio=0.2, test_ratio=0.2)
    series = load_series(c)
    base = series[0].values.base
    assert base is not None and all(s.values.base is base for s in series)
    joined = np.concatenate([s.values for s in series])
    np.testing.assert_array_equal(base[:len(joined)], joined)
    assert all(s.source_sha256 == file_sha256(path) for s in series)
    splits = build_datasets(c)
    assert splits.train._values.base is splits.series[0].values.base  # no copy of the rows for the splits
