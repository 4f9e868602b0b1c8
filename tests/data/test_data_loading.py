import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kronos_exp.data import DataConfig, DataError, load_series, resolve_paths
from kronos_exp.data.assembly import ffill_rows

YAHOO_DAILY = """Date,Open,High,Low,Close,Adj Close,Volume
2023-01-03,130.279999,130.899994,124.169998,125.070000,124.216301,112117500
2023-01-04,126.889999,128.660004,125.080002,126.360001,125.497498,89113600
2023-01-05,127.129997,127.769997,124.760002,125.019997,124.166634,80962700
2023-01-06,null,null,null,null,null,null
2023-01-09,130.470001,133.410004,129.889999,130.149994,129.261642,70790800
"""

YAHOO_HOURLY = """Datetime,Open,High,Low,Close,Adj Close,Volume
2023-03-10 09:30:00-05:00,150.21,150.94,149.10,149.50,149.50,16123000
2023-03-10 10:30:00-05:00,149.50,150.02,148.20,148.90,148.90,9876000
2023-03-13 09:30:00-04:00,147.81,150.10,147.70,149.90,149.90,15000000
"""

REFERENCE = """timestamps,open,high,low,close,volume,amount
2024-06-18 11:15:00,10.5,10.6,10.4,10.55,1200,12660.0
2024-06-18 11:20:00,10.55,10.7,10.5,10.65,800,8520.0
2024-06-18 11:25:00,10.65,10.66,10.6,10.61,500,5305.0
"""


def load(path, **kw):
    return load_series(DataConfig(path=path, **kw))


# ---------------------------------------------------------------- formats


def test_yahoo_daily_loads_without_overrides(write_csv, caplog):
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(write_csv("AAPL.csv", YAHOO_DAILY))
    assert s.name == "AAPL" and s.values.dtype == np.float32 and s.values.shape == (5, 6)
    assert s.timestamps.dtype == np.dtype("datetime64[ns]")
    assert str(s.timestamps[0]) == "2023-01-03T00:00:00.000000000"
    np.testing.assert_allclose(s.values[0, :5], [130.279999, 130.899994, 124.169998, 125.07, 112117500], rtol=1e-6)
    # the "null" row is forward-filled from the previous day, and Adj Close is not used as close
    np.testing.assert_array_equal(s.values[3], s.values[2])
    assert s.values[4, 3] == np.float32(130.149994)
    # amount = volume * mean(open, high, low, close)
    np.testing.assert_allclose(s.values[0, 5], 112117500 * (130.279999 + 130.899994 + 124.169998 + 125.07) / 4, rtol=1e-6)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 row(s) with missing values" in warning.getMessage() and "forward-filled" in warning.getMessage()


def test_yahoo_hourly_with_utc_offsets_keeps_the_wall_clock_time_across_dst(write_csv):
    # 2023-03-12 is the US change to daylight time: the offset goes from -05:00 to -04:00.
    [s] = load(write_csv("MSFT_1h.csv", YAHOO_HOURLY))
    assert [str(t)[:19] for t in s.timestamps] == ["2023-03-10T09:30:00", "2023-03-10T10:30:00", "2023-03-13T09:30:00"]
    np.testing.assert_allclose(s.values[:, 4], [16123000, 9876000, 15000000])
    from kronos_exp.data import time_features
    assert time_features(s.timestamps)[:, 1].tolist() == [9, 10, 9]  # the hour, as the published code reads it


def test_offsets_order_and_deduplicate_by_the_true_instant(write_csv):
    # 2023-11-05 01:00-02:00 happens twice in New York; the file lists it out of order.
    text = ("timestamps,open,high,low,close\n"
            "2023-11-05 01:30:00-05:00,3,3,3,3\n"   # the second 01:30 (06:30 UTC)
            "2023-11-05 01:30:00-04:00,1,1,1,1\n"   # the first 01:30 (05:30 UTC)
            "2023-11-05 01:15:00-05:00,2,2,2,2\n")  # 06:15 UTC
    [s] = load(write_csv("fallback.csv", text))
    assert s.values[:, 3].tolist() == [1, 2, 3]  # sorted by instant, and no "duplicate timestamp"
    assert [str(t)[11:16] for t in s.timestamps] == ["01:30", "01:15", "01:30"]  # wall clock kept


def test_reference_five_minute_format(write_csv):
    [s] = load(write_csv("600977.csv", REFERENCE))
    assert s.name == "600977"
    np.testing.assert_allclose(s.values[1], [10.55, 10.7, 10.5, 10.65, 800, 8520.0], rtol=1e-6)
    assert np.diff(s.timestamps).astype("timedelta64[m]").astype(int).tolist() == [5, 5]


def test_column_map_and_timestamp_column_for_unusual_names(write_csv):
    text = "When;PX_OPEN;PX_HIGH;PX_LOW;PX_LAST\n2024-01-02;1;2;0.5;1.5\n2024-01-03;1.5;2.5;1;2\n"
    cfg = dict(timestamp_column="When", column_map={"px_open": "open", "PX_HIGH": "high", "Px_Low": "low", "px_last": "close"})
    [s] = load(write_csv("bbg.csv", text), **cfg)  # semicolon separator is sniffed
    np.testing.assert_allclose(s.values[1], [1.5, 2.5, 1, 2, 0, 0])  # no volume -> 0, amount -> 0


def test_vol_alias_date_time_columns_and_empty_optional_column(write_csv):
    text = "Date,Time,Open,High,Low,Close,Vol,Amount\n2024-01-02,09:30,1,2,0.5,1.5,10,\n2024-01-02,09:35,1.5,2.5,1,2,20,\n"
    [s] = load(write_csv("mt.csv", text))
    assert str(s.timestamps[1])[:19] == "2024-01-02T09:35:00"
    np.testing.assert_allclose(s.values[:, 4], [10, 20])
    np.testing.assert_allclose(s.values[:, 5], [10 * 5 / 4, 20 * 7 / 4])  # empty amount column -> computed


def test_epoch_and_yyyymmdd_timestamps(write_csv):
    ms = write_csv("ms.csv", "time,open,high,low,close\n1704186000000,1,1,1,1\n1704186060000,1,1,1,1\n")
    assert str(load(ms)[0].timestamps[1])[:19] == "2024-01-02T09:01:00"
    ymd = write_csv("ymd.csv", "date,open,high,low,close\n20240102,1,1,1,1\n20240103,1,1,1,1\n")
    assert str(load(ymd)[0].timestamps[1])[:10] == "2024-01-03"


def test_timestamp_format_option(write_csv):
    path = write_csv("eu.csv", "Date,Open,High,Low,Close\n02/01/2024,1,1,1,1\n13/01/2024,1,1,1,1\n")
    [s] = load(path, timestamp_format="%d/%m/%Y")
    assert [str(t)[:10] for t in s.timestamps] == ["2024-01-02", "2024-01-13"]


def test_symbol_column_splits_a_file(write_csv, frame):
    a, b = frame(30, seed=1), frame(20, seed=2)
    a["ticker"], b["ticker"] = "007", "AAA"
    mixed = pd.concat([a, b]).sample(frac=1, random_state=0)  # interleaved and shuffled
    path = write_csv("many.csv", mixed)
    series = load(path, symbol_column="Ticker")
    assert [s.name for s in series] == ["007", "AAA"]  # leading zeros kept
    assert [len(s) for s in series] == [30, 20]
    np.testing.assert_allclose(series[0].values[:, 3], a["close"].to_numpy(), rtol=1e-6)
    assert (np.diff(series[1].timestamps) > np.timedelta64(0)).all()


def test_glob_list_and_folder(write_csv, frame, tmp_path):
    p1 = write_csv("d/x.csv", frame(10, seed=1))
    p2 = write_csv("d/y.csv", frame(12, seed=2))
    write_csv("d/notes.txt", "ignored")
    by_glob = load(str(tmp_path / "d" / "*.csv"))
    assert [(s.name, len(s)) for s in by_glob] == [("x", 10), ("y", 12)]
    by_list = load_series(DataConfig(paths=[p2, p1]))
    assert [s.name for s in by_list] == ["x", "y"] and by_list[0].source == p1
    assert [s.name for s in load(str(tmp_path / "d"))] == ["x", "y"]
    assert resolve_paths(DataConfig(paths=[p2, p1, p1])) == [Path(p1), Path(p2)]


def test_symbol_names_with_several_files(write_csv, frame):
    a = frame(10)
    a["symbol"] = "S"
    paths = [write_csv("one.csv", a), write_csv("two.csv", a)]
    assert [s.name for s in load_series(DataConfig(paths=paths, symbol_column="symbol"))] == ["one:S", "two:S"]


def test_nothing_matches(tmp_path):
    pattern = str(tmp_path / "nope" / "*.csv")
    with pytest.raises(DataError, match=r"no data file matches '.*nope/\*\.csv'"):
        resolve_paths(DataConfig(path=pattern))
    with pytest.raises(DataError, match=r"no data file matches 'missing\.csv' \(relative to "):
        resolve_paths(DataConfig(path="missing.csv"))


def test_default_is_the_bundled_sample():
    [path] = resolve_paths(DataConfig())
    assert path.name == "sample_5min.csv" and path.is_file()


# ---------------------------------------------------------------- errors


def test_missing_column_names_file_and_columns(write_csv):
    path = write_csv("bad.csv", "Date,Open,High,Close\n2024-01-02,1,2,1\n")
    with pytest.raises(DataError) as e:
        load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: missing required column(s) low;")
    assert "'Date', 'Open', 'High', 'Close'" in msg and "data.column_map" in msg


def test_missing_timestamp_column(write_csv):
    path = write_csv("nots.csv", "when,open,high,low,close\nx,1,1,1,1\n")
    with pytest.raises(DataError, match=r"missing required column\(s\) timestamp; .*data.timestamp_column"):
        load(path)


def test_unparseable_timestamp_names_line_and_value(write_csv):
    text = "timestamps,open,high,low,close\n2024-01-02 09:30,1,1,1,1\n\n2024-01-02 09:35,1,1,1,1\n2024-13-45 25:00,1,1,1,1\n"
    path = write_csv("ts.csv", text)
    with pytest.raises(DataError) as e:
        load(path)
    # the blank line 3 still counts: the bad value is on line 5
    assert str(e.value).startswith(f"{path}: column 'timestamps', line 5: cannot parse timestamp '2024-13-45 25:00'")


def test_empty_timestamp(write_csv):
    path = write_csv("ts.csv", "timestamps,open,high,low,close\n2024-01-02,1,1,1,1\n,1,1,1,1\n")
    with pytest.raises(DataError, match=r"column 'timestamps', line 3: empty timestamp"):
        load(path)


def test_duplicate_timestamp_names_both_lines(write_csv):
    text = "Date,Open,High,Low,Close\n2024-01-02,1,1,1,1\n2024-01-03,1,1,1,1\n2024-01-02,2,2,2,2\n"
    path = write_csv("dup.csv", text)
    with pytest.raises(DataError) as e:
        load(path)
    assert str(e.value) == (
        f"{path}: duplicate timestamp 2024-01-02 00:00:00 at lines 2 and 4 (1 duplicate(s)); "
        "each timestamp may appear once per series; if the file holds several series, name the column "
        "that tells them apart with data.symbol_column"
    )


def test_several_symbols_without_symbol_column_hint_at_it(write_csv):
    text = ("date,ticker,exchange,open,high,low,close,note\n"
            "2024-01-02,AAA,X,1,1,1,1,7\n2024-01-02,BBB,X,2,2,2,2,7\n2024-01-03,AAA,X,1,1,1,1,8\n")
    with pytest.raises(DataError, match=r"duplicate timestamp 2024-01-02 00:00:00 at lines 2 and 3 .*; the file "
                                        r"looks like several series in one: set data.symbol_column=ticker "
                                        r"\(columns of repeated text: ticker, exchange\)$"):
        load(write_csv("multi.csv", text))


def test_duplicate_within_one_symbol_names_the_series(write_csv):
    text = "date,sym,open,high,low,close\n2024-01-02,A,1,1,1,1\n2024-01-02,B,1,1,1,1\n2024-01-02,B,1,1,1,1\n"
    with pytest.raises(DataError, match=r"\(series 'B'\): duplicate timestamp 2024-01-02 00:00:00 at lines 3 and 4"):
        load(write_csv("s.csv", text), symbol_column="sym")


def test_non_finite_value(write_csv):
    path = write_csv("inf.csv", "Date,Open,High,Low,Close\n2024-01-02,1,1,1,1\n2024-01-03,1,inf,1,1\n")
    with pytest.raises(DataError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: column 'High', line 3: non-finite value inf")


def test_non_numeric_text(write_csv):
    path = write_csv("txt.csv", "Date,Open,High,Low,Close\n2024-01-02,1,1,1,1\n2024-01-03,1,1,1,abc\n")
    with pytest.raises(DataError, match=r"column 'Close', line 3: 'abc' is not a number \(1 such value\(s\)\)"):
        load(path)


def test_negative_volume(write_csv):
    path = write_csv("neg.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,5\n2024-01-03,1,1,1,1,-3\n")
    with pytest.raises(DataError) as e:
        load(path)
    assert str(e.value) == f"{path}: column 'Volume', line 3: negative volume -3 (1 negative value(s)); volume must be >= 0"


NANS = "Date,Open,High,Low,Close,Volume\n2024-01-01,,1,1,1,1\n2024-01-02,1,1,1,1,1\n2024-01-03,2,,2,2,2\n2024-01-04,3,3,3,3,\n2024-01-05,4,4,4,4,4\n"


def test_nan_policy_error(write_csv):
    path = write_csv("nan.csv", NANS)
    with pytest.raises(DataError) as e:
        load(path, nan_policy="error")
    assert str(e.value).startswith(f"{path}: column 'open', line 2: missing value (3 row(s) with missing values)")
    assert "nan_policy=ffill or drop" in str(e.value)


def test_nan_policy_drop_counts(write_csv, caplog):
    path = write_csv("nan.csv", NANS)
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path, nan_policy="drop")
    assert [str(t)[:10] for t in s.timestamps] == ["2024-01-02", "2024-01-05"]
    [r] = caplog.records
    assert r.getMessage() == f"{path}: 3 row(s) with missing values (open: 1, high: 1, volume: 1); nan_policy=drop dropped those rows"


def test_nan_policy_ffill_counts(write_csv, caplog):
    path = write_csv("nan.csv", NANS)
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path)
    assert len(s) == 4  # the first row has nothing to fill its open from
    np.testing.assert_allclose(s.values[:, :5], [[1, 1, 1, 1, 1], [2, 1, 2, 2, 2], [3, 3, 3, 3, 2], [4, 4, 4, 4, 4]])
    [r] = caplog.records
    assert r.getMessage() == (
        f"{path}: 3 row(s) with missing values (open: 1, high: 1, volume: 1); nan_policy=ffill forward-filled them; "
        "1 leading row(s) with nothing to fill from were dropped"
    )


def test_ffill_rows_helper():
    v = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [4.0, 5.0]])
    filled, unfilled = ffill_rows(v)
    np.testing.assert_array_equal(filled[1:], [[2, 1], [2, 1], [4, 5]])
    assert unfilled.tolist() == [True, False, False, False]


def test_unsorted_input_is_sorted_with_one_warning(write_csv, caplog):
    text = "Date,Open,High,Low,Close\n2024-01-03,3,3,3,3\n2024-01-01,1,1,1,1\n2024-01-04,4,4,4,4\n2024-01-02,2,2,2,2\n"
    path = write_csv("unsorted.csv", text)
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path)
    np.testing.assert_array_equal(s.values[:, 0], [1, 2, 3, 4])
    assert [r.getMessage() for r in caplog.records] == [f"{path}: rows are not in time order; sorted them by timestamp"]


def test_volume_and_amount_fill_rules(write_csv):
    no_volume = write_csv("nv.csv", "Date,Open,High,Low,Close\n2024-01-02,2,6,1,3\n")
    np.testing.assert_array_equal(load(no_volume)[0].values, [[2, 6, 1, 3, 0, 0]])
    no_amount = write_csv("na.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,2,6,1,3,10\n")
    np.testing.assert_array_equal(load(no_amount)[0].values, [[2, 6, 1, 3, 10, 30]])
    both = write_csv("both.csv", "Date,Open,High,Low,Close,Volume,Amount\n2024-01-02,2,6,1,3,10,7\n")
    np.testing.assert_array_equal(load(both)[0].values, [[2, 6, 1, 3, 10, 7]])


def test_same_column_twice_is_an_error(write_csv):
    path = write_csv("two.csv", "Date,Close,Px\n2024-01-02,1,1\n")
    with pytest.raises(DataError, match=r"columns 'Close' and 'Px' both give column 'close'"):
        load(path, column_map={"px": "close"})


def test_relative_path_resolves_from_cwd(write_csv, frame, tmp_path, monkeypatch):
    write_csv("rel.csv", frame(5))
    monkeypatch.chdir(tmp_path)
    assert resolve_paths(DataConfig(path="rel.csv")) == [tmp_path.resolve() / "rel.csv"]
