import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from kronos_exp.data import (
    DataConfig,
    DataError,
    WindowDataset,
    build_datasets,
    lookback_normalize,
    split_sizes,
    time_features,
)


def small_cfg(path, **kw):
    base = dict(path=path, lookback_window=8, predict_window=4, train_ratio=0.6, val_ratio=0.2, test_ratio=0.2)
    base.update(kw)
    return DataConfig(**base)


def test_no_leakage_from_the_forecast_horizon(write_csv, frame, tmp_path):
    df = frame(300, seed=3)
    L, P = 16, 8
    before = build_datasets(small_cfg(write_csv("a.csv", df), lookback_window=L, predict_window=P))
    i = 17
    series, start = before.train.index[i]
    assert series == 0
    # Change every value inside window i's forecast horizon (rows start+L .. start+L+P-1 of train).
    changed = df.copy()
    cols = ["open", "high", "low", "close", "volume", "amount"]
    rows = changed.index[start + L : start + L + P]
    changed.loc[rows, cols] = changed.loc[rows, cols] * 3.0 + 7.0
    after = build_datasets(small_cfg(write_csv("b.csv", changed), lookback_window=L, predict_window=P))
    x0, s0 = before.train[i]
    x1, s1 = after.train[i]
    assert torch.equal(x0[:L], x1[:L])  # the normalized lookback does not see the horizon
    assert torch.equal(s0, s1)
    assert not torch.equal(x0[L:], x1[L:])  # ... while the horizon itself did change
    # A whole-window normalization (the reference behaviour) would have leaked:
    raw0, raw1 = before.train.raw(i), after.train.raw(i)
    leaky0 = (raw0[:L] - raw0.mean(0)) / (raw0.std(0) + 1e-5)
    leaky1 = (raw1[:L] - raw1.mean(0)) / (raw1.std(0) + 1e-5)
    assert not np.allclose(leaky0, leaky1)


def test_normalization_formula_and_clip(write_csv, frame):
    splits = build_datasets(small_cfg(write_csv("a.csv", frame(200)), clip=1.5))
    x, stamp = splits.train[5]
    raw = splits.train.raw(5).astype(np.float64)
    mean, std = raw[:8].mean(0), raw[:8].std(0)
    expected = np.clip((raw - mean) / (std + 1e-5), -1.5, 1.5)
    assert x.shape == (12, 6) and stamp.shape == (12, 5) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert x.abs().max().item() == pytest.approx(1.5)  # something was clipped


def test_lookback_normalize_constant_column_is_zero_not_nan():
    w = np.ones((10, 6), dtype=np.float32)
    x, mean, std = lookback_normalize(w, 6, 5.0)
    assert np.all(x == 0) and std.shape == (1, 6)


def test_split_sizes_and_rows_per_split(write_csv, frame):
    assert split_sizes(100, 0.8, 0.1) == (80, 10, 10)
    assert split_sizes(101, 0.8, 0.1) == (80, 10, 11)
    assert split_sizes(100, 0.29, 0.31) == (29, 31, 40)  # no float truncation surprises
    splits = build_datasets(small_cfg(write_csv("a.csv", frame(100))))
    assert splits.summary["rows"] == {"train": 60, "val": 20, "test": 20}
    # windows of 12 rows at stride 1: n - 12 + 1 per split
    assert splits.summary["windows"] == {"train": 49, "val": 9, "test": 9}
    assert [len(splits.train), len(splits.val), len(splits.test)] == [49, 9, 9]


def test_windows_never_cross_series_or_split_boundaries(write_csv, frame, tmp_path):
    """Two series of one panel, the second starting 15 bars later: split by one calendar (the ratios
    over their 90 distinct timestamps: train 45, val 22, test 23 of them). The first series ends
    before the test dates and joins train and val only."""
    paths, starts = [], ["2024-01-02 09:30", "2024-01-02 10:45"]  # 15 five-minute bars apart
    for k, n in enumerate([60, 75]):
        df = frame(n, start=starts[k], seed=k)
        df["volume"] = 1000 * (k + 1) + np.arange(n)  # encode (series, row); prices must stay consistent bars
        paths.append(write_csv(f"s{k}.csv", df))
    splits = build_datasets(DataConfig(paths=paths, lookback_window=5, predict_window=3, train_ratio=0.5,
                                       val_ratio=0.25, test_ratio=0.25, stride=2))
    union = np.unique(np.concatenate([s.timestamps for s in splits.series]))
    assert len(union) == 90
    dates = {"train": (union[0], union[45]), "val": (union[45], union[67]), "test": (union[67], union[-1] + 1)}
    seen = set()
    for name in ("train", "val", "test"):
        ds = getattr(splits, name)
        for i in range(len(ds)):
            volumes = ds.raw(i)[:, 4]
            k = int(volumes[0] // 1000) - 1
            rows = volumes - 1000 * (k + 1)
            assert (np.diff(rows) == 1).all()
            assert ds.series_name(i) == f"s{k}"
            seen.add((name, k))
            stamps = ds.timestamps(i)
            assert (stamps == splits.series[k].timestamps[rows.astype(int)]).all()
            lo, hi = dates[name]
            assert stamps.min() >= lo and stamps.max() < hi  # targets included
    assert seen == {("train", 0), ("val", 0), ("train", 1), ("val", 1), ("test", 1)}
    assert splits.train.index[:3].tolist() == [[0, 0], [0, 2], [0, 4]]
    assert splits.summary["split_dates"] == {"train": "2024-01-02 09:30:00 .. 2024-01-02 13:10:00",
                                             "val": "2024-01-02 13:15:00 .. 2024-01-02 15:00:00",
                                             "test": "2024-01-02 15:05:00 .. 2024-01-02 16:55:00"}


def test_a_late_series_never_trains_on_a_date_another_is_tested_on(write_csv, frame):
    """The audit's panel: a series whose history starts late. Split by its own rows it would train
    up to dates inside the other's test period; on the shared calendar no train or validation
    timestamp of either series is at or after the first test date."""
    early = write_csv("early.csv", frame(1000, start="2012-01-02", freq="D", seed=1))
    late = write_csv("late.csv", frame(400, start="2013-08-24", freq="D", seed=2))  # both end 2014-09-27
    splits = build_datasets(DataConfig(paths=[early, late], lookback_window=10, predict_window=5))
    first_test = min(splits.test.timestamps((k, 0))[0] for k in range(len(splits.test.lengths)))
    for name in ("train", "val"):
        ds = getattr(splits, name)
        latest = max(ds.timestamps((k, int(ds.starts(k)[-1])))[-1] for k in range(len(ds.lengths)))
        assert latest < first_test, name
    own_rows = split_sizes(400, 0.8, 0.1)[0]  # where the late series' train rows would end, split by itself
    assert splits.series[1].timestamps[own_rows - 1] >= first_test  # ... inside the test period
    assert sorted(splits.test.names) == ["early", "late"] and "late" in splits.train.names


def test_a_series_that_fills_no_split_states_rows_needed_and_per_split_rows(write_csv, frame):
    long_path = write_csv("long.csv", frame(400))
    short_path = write_csv("short.csv", frame(15))
    with pytest.raises(DataError) as e:
        build_datasets(DataConfig(paths=[long_path, short_path], lookback_window=16, predict_window=4))
    msg = str(e.value)
    assert msg.startswith(
        "1 series too short: each split needs at least lookback_window + predict_window + 1 = 16 + 4 + 1 = 21 rows, "
        "i.e. at least 210 rows per series with train/val/test ratios 0.8/0.1/0.1:"
    )
    assert f"series 'short' ({short_path}): 15 rows -> train 15, val 0, test 0" in msg
    assert "'long'" not in msg


def test_rows_needed_is_exact(write_csv, frame):
    cfg = dict(lookback_window=16, predict_window=4)
    build_datasets(DataConfig(path=write_csv("ok.csv", frame(210)), **cfg))  # 168/21/21
    with pytest.raises(DataError, match="209 rows -> train 167, val 20, test 22"):
        build_datasets(DataConfig(path=write_csv("no.csv", frame(209)), **cfg))


def test_max_windows_subsamples_evenly_and_deterministically(write_csv, frame):
    path = write_csv("a.csv", frame(400))
    full = build_datasets(small_cfg(path))
    capped = build_datasets(small_cfg(path, max_train_windows=10, max_eval_windows=3))
    assert (len(capped.train), len(capped.val), len(capped.test)) == (10, 3, 3)
    n = len(full.train)
    assert capped.train.index[:, 1].tolist() == [(j * n) // 10 for j in range(10)]
    assert capped.summary["windows_available"]["train"] == n
    again = build_datasets(small_cfg(path, max_train_windows=10, max_eval_windows=3))
    assert torch.equal(capped.train[4][0], again.train[4][0])


def test_batch_and_dataloader_match_getitem(write_csv, frame):
    splits = build_datasets(small_cfg(write_csv("a.csv", frame(300))))
    ds = splits.train
    x, s = ds.batch([3, 0, 7])
    assert x.shape == (3, 12, 6) and s.shape == (3, 12, 5)
    assert torch.equal(x[0], ds[3][0]) and torch.equal(s[2], ds[7][1])
    loader = DataLoader(ds, batch_size=16, shuffle=False)
    bx, bs = next(iter(loader))
    assert bx.shape == (16, 12, 6) and bs.shape == (16, 12, 5)
    assert torch.equal(bx[5], ds[5][0])
    with pytest.raises(IndexError):
        ds[len(ds)]



def test_windows_on_a_device_give_the_same_batches(write_csv, frame):
    """What the loop uses on a GPU: rows gathered and normalized by torch where they live."""
    ds = build_datasets(small_cfg(write_csv("a.csv", frame(300)))).train
    on = ds.on("cuda" if torch.cuda.is_available() else "cpu")
    assert len(on) == len(ds) and on.on_device
    idx = [3, 0, len(ds) - 1, 7]
    (x, s), (dx, ds_) = ds.batch(idx), on.batch(idx)
    torch.testing.assert_close(dx.cpu(), x, rtol=0, atol=1e-6)
    assert dx.dtype == torch.float32 and torch.equal(ds_.cpu(), s)

def test_time_features_values():
    ts = np.array(["2024-03-15 09:35", "2024-12-29 23:59", "2025-01-06 00:00"], dtype="datetime64[ns]")
    expected = [[35, 9, 4, 15, 3], [59, 23, 6, 29, 12], [0, 0, 0, 6, 1]]  # Fri, Sun, Mon
    for given in (ts, pd.DatetimeIndex(ts), pd.Series(ts)):
        out = time_features(given)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)
    aware = pd.DatetimeIndex(ts).tz_localize("America/New_York")
    np.testing.assert_array_equal(time_features(aware), expected)  # the wall-clock time as written
    np.testing.assert_array_equal(time_features(pd.Series(aware)), expected)


def test_time_features_of_zone_aware_times_use_the_wall_clock_across_dst():
    # The same 09:30 New York open before and after the 2024-03-10 change to daylight time.
    opens = pd.DatetimeIndex(["2024-03-08 09:30", "2024-03-11 09:30"]).tz_localize("America/New_York")
    assert time_features(opens)[:, :2].tolist() == [[30, 9], [30, 9]]
    assert time_features(opens.tz_convert("UTC"))[:, 1].tolist() == [14, 13]  # UTC input: UTC hours


def test_any_window_of_a_split_by_series_and_start_even_one_max_windows_left_out(write_csv, frame):
    from kronos_exp.data import load_series

    series = load_series(DataConfig(path=write_csv("a.csv", frame(60))))

    def windows(**kwargs) -> WindowDataset:  # over the whole series (no split)
        return WindowDataset([s.values for s in series], [time_features(s.timestamps) for s in series], 10, 5,
                             names=[s.name for s in series], timestamps=[s.timestamps for s in series], **kwargs)

    every = windows(stride=2)
    capped = windows(stride=2, max_windows=3)
    assert capped.starts(0).tolist() == every.index[:, 1].tolist() == list(range(0, 46, 2))
    kept = set(capped.index[:, 1].tolist())
    left_out = next(s for s in capped.starts(0) if s not in kept)
    i = every.index[:, 1].tolist().index(left_out)
    np.testing.assert_array_equal(capped.raw((0, int(left_out))), every.raw(i))
    np.testing.assert_array_equal(capped.timestamps((0, int(left_out))), every.timestamps(i))
    assert capped.series_name((0, int(left_out))) == "a"
    with pytest.raises(IndexError):
        capped.raw((0, 46))  # 46 + 15 rows > 60


def test_summary_is_small_and_serialisable(write_csv, frame):
    import json

    splits = build_datasets(small_cfg(write_csv("a.csv", frame(100, start="2024-01-02 09:30"))))
    summary = json.loads(json.dumps(splits.summary))
    assert summary["n_series"] == 1 and summary["n_files"] == 1 and summary["series"] == ["a"]
    assert summary["start"] == "2024-01-02 09:30:00" and summary["end"] == "2024-01-02 17:45:00"


def test_test_ratio_zero_means_no_test_split_said_once(write_csv, frame, caplog):
    caplog.set_level("INFO", logger="kronos_exp.data.windows")
    splits = build_datasets(small_cfg(write_csv("a.csv", frame(200, seed=1)), train_ratio=0.8, val_ratio=0.2,
                                      test_ratio=0.0))
    assert len(splits.test) == 0 and len(splits.val) > 0
    assert splits.val.lengths.sum() == 40  # val takes the rows the test split would have had
    assert caplog.text.count("no test split") == 1


def test_a_validation_split_of_few_windows_is_warned_about(write_csv, frame, caplog):
    path = write_csv("a.csv", frame(200, seed=1))
    caplog.set_level("INFO", logger="kronos_exp.data.windows")
    build_datasets(small_cfg(path, max_eval_windows=2))
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "only 2 validation window(s)" in warning.getMessage()
    caplog.clear()
    build_datasets(small_cfg(path))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_file_digests_are_of_the_bytes_that_were_read(write_csv, frame, tmp_path):
    """The fingerprint hashes what training read: a file rewritten after loading does not change
    the digest the splits report (hashing the path again would)."""
    import hashlib
    from pathlib import Path

    a, b = Path(write_csv("a.csv", frame(150))), Path(write_csv("b.csv", frame(160)))
    read = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    splits = build_datasets(DataConfig(paths=[str(a), str(b)], lookback_window=8, predict_window=2))
    a.write_text(a.read_text().replace("\n", "\n\n", 1))  # a blank line: the same series, other bytes
    assert splits.file_digests == read
    assert hashlib.sha256(a.read_bytes()).hexdigest() != read[0]
