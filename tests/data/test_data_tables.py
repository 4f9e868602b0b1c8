"""Parquet and Feather/Arrow input, and the chunked read: the same series and the same one-line
errors as a CSV of the same rows (rows counted from 1 instead of lines from the header)."""

import io
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import kronos_exp.data.collect as collect
from kronos_exp.data import DataConfig, DataError, load_series

from test_data_loading import REFERENCE, YAHOO_DAILY, YAHOO_HOURLY


def write_table(path, table: pa.Table) -> str:
    if str(path).endswith(".parquet"):
        pq.write_table(table, path)
    else:
        feather.write_feather(table, str(path))
    return str(path)


def text_table(csv_text: str) -> pa.Table:
    """Every column as text, exactly as the CSV writes it (empty cells are empty strings)."""
    df = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False)
    return pa.table({name: pa.array(df[name].tolist(), type=pa.string()) for name in df.columns})


def typed_table(csv_text: str, timestamps: str) -> pa.Table:
    """Numbers as numbers and the timestamp column as a timestamp type (New York time where the
    text has UTC offsets: the Yahoo hourly bars are New York's)."""
    df = pd.read_csv(io.StringIO(csv_text))
    if df[timestamps].astype(str).str.contains(r"[+-]\d\d:\d\d$").any():
        df[timestamps] = pd.to_datetime(df[timestamps], utc=True).dt.tz_convert("America/New_York")
    else:
        df[timestamps] = pd.to_datetime(df[timestamps])
    return pa.Table.from_pandas(df, preserve_index=False)


def load(path, **kw):
    return load_series(DataConfig(path=str(path), **kw))


def message(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        load(path, **kw)
    text = str(e.value)
    assert "\n" not in text
    return text


def same(a, b):
    assert [s.name for s in a] == [s.name for s in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.timestamps, y.timestamps)
        np.testing.assert_array_equal(x.values, y.values)


@pytest.mark.parametrize("suffix", [".parquet", ".feather", ".arrow"])
@pytest.mark.parametrize("kind", ["text", "typed"])
@pytest.mark.parametrize("csv_text, column", [(REFERENCE, "timestamps"), (YAHOO_DAILY, "Date"), (YAHOO_HOURLY, "Datetime")])
def test_tables_load_as_the_csv_of_the_same_rows(write_csv, tmp_path, suffix, kind, csv_text, column):
    table = text_table(csv_text) if kind == "text" else typed_table(csv_text, column)
    [from_table] = load(write_table(tmp_path / f"prices{suffix}", table))
    [from_csv] = load(write_csv("prices.csv", csv_text))
    same([from_table], [from_csv])
    assert from_table.source_sha256 and from_table.source_sha256 != from_csv.source_sha256


def test_a_zone_aware_timestamp_type_keeps_its_wall_clock_and_orders_by_instant(tmp_path):
    # 2023-11-05 01:00-02:00 happens twice in New York; the rows are out of order.
    stamps = pd.DatetimeIndex(["2023-11-05 06:30", "2023-11-05 05:30", "2023-11-05 06:15"], tz="UTC").tz_convert("America/New_York")
    table = pa.table({"timestamps": stamps, "open": [3.0, 1, 2], "high": [3.0, 1, 2], "low": [3.0, 1, 2], "close": [3.0, 1, 2]})
    [s] = load(write_table(tmp_path / "fallback.parquet", table))
    assert s.values[:, 3].tolist() == [1, 2, 3]
    assert [str(t)[11:16] for t in s.timestamps] == ["01:30", "01:15", "01:30"]


def test_a_folder_of_parquet_files_one_per_symbol_and_a_glob(tmp_path, frame):
    folder = tmp_path / "bars"
    folder.mkdir()
    for k, name in enumerate(["AAA", "BBB"]):
        pq.write_table(pa.Table.from_pandas(frame(30, seed=k), preserve_index=False), folder / f"{name}.parquet")
    (folder / "notes.txt").write_text("not data")
    by_folder, by_glob = load(folder), load(folder / "*.parquet")
    assert [s.name for s in by_folder] == ["AAA", "BBB"] and [len(s) for s in by_folder] == [30, 30]
    same(by_folder, by_glob)
    np.testing.assert_allclose(by_folder[1].values[:, 3], frame(30, seed=1)["close"], rtol=1e-6)


@pytest.mark.parametrize("categorical", [False, True])
def test_a_parquet_with_a_symbol_column(tmp_path, frame, categorical):
    parts = [frame(20, seed=k).assign(ticker=name) for k, name in enumerate(["007", "ABC"])]
    df = pd.concat(parts).sort_values("timestamps", kind="stable")
    if categorical:  # written as a dictionary-encoded column
        df["ticker"] = df["ticker"].astype("category")
    [a, b] = load(write_table(tmp_path / "all.parquet", pa.Table.from_pandas(df, preserve_index=False)), symbol_column="ticker")
    assert (a.name, b.name, len(a), len(b)) == ("007", "ABC", 20, 20)


def test_a_date_type_reads_as_midnight(tmp_path, frame):
    df = frame(5, freq="1D")
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(0, "Date", pa.array(df["timestamps"].dt.date, type=pa.date32()))
    [s] = load(write_table(tmp_path / "daily.parquet", table))
    assert [str(t)[:19] for t in s.timestamps[:2]] == ["2024-01-02T00:00:00", "2024-01-03T00:00:00"]


@pytest.mark.parametrize("kind", ["text", "typed"])
def test_errors_name_the_file_the_column_and_the_row(tmp_path, kind):
    bad = REFERENCE.replace("10.55,10.7", "10.55,abc" if kind == "text" else "10.55,-1")
    table = text_table(bad) if kind == "text" else typed_table(bad, "timestamps")
    path = write_table(tmp_path / "bad.parquet", table)
    expected = ("column 'high', row 2: 'abc' is not a number (1 such value(s))" if kind == "text"
                else "column 'high', row 2: price -1 is not positive (1 such value(s))")
    assert message(path).startswith(f"{path}: {expected}")


def test_typed_errors_duplicates_booleans_and_missing_timestamps(tmp_path, frame):
    df = frame(12)
    df.loc[5, "timestamps"] = df.loc[4, "timestamps"]
    path = write_table(tmp_path / "dup.parquet", pa.Table.from_pandas(df, preserve_index=False))
    assert "duplicate timestamp 2024-01-02 09:50:00 at rows 5 and 6 (1 duplicate(s))" in message(path)
    flags = frame(12).assign(volume=True)
    path = write_table(tmp_path / "flags.feather", pa.Table.from_pandas(flags, preserve_index=False))
    assert message(path).startswith(f"{path}: column 'volume', row 1: True is a true/false value, not a number (12 such")
    gap = pa.Table.from_pandas(frame(12), preserve_index=False)
    stamps = gap.column("timestamps").to_pylist()
    stamps[7] = None
    gap = gap.set_column(0, "timestamps", pa.array(stamps, type=pa.timestamp("ns")))
    path = write_table(tmp_path / "gap.parquet", gap)
    assert message(path) == f"{path}: column 'timestamps', row 8: empty timestamp; every row needs a time"


def test_a_timestamp_type_beyond_the_nanosecond_range(tmp_path, frame):
    table = pa.Table.from_pandas(frame(3), preserve_index=False)
    far = pa.array([pd.Timestamp("2024-01-02").to_pydatetime()] * 2 + [pd.Timestamp("2200-01-01").to_pydatetime().replace(year=2300)],
                   type=pa.timestamp("s"))
    path = write_table(tmp_path / "far.parquet", table.set_column(0, "timestamps", far))
    assert "column 'timestamps', row 3: timestamp 2300-01-01 00:00:00 is outside the range pandas holds" in message(path)


@pytest.mark.parametrize("name", ["broken.parquet", "broken.feather", "broken.arrow"])
def test_a_damaged_file_is_one_line_naming_it(tmp_path, frame, name):
    good = write_table(tmp_path / name, pa.Table.from_pandas(frame(50), preserve_index=False))
    data = open(good, "rb").read()
    for damaged in (data[: len(data) // 2], b"not a table at all"):
        open(good, "wb").write(damaged)
        text = message(good)
        assert text.startswith(f"{good}: cannot read it as ") and ("Parquet" in text) == name.endswith(".parquet")


def test_a_column_of_an_unsupported_type_is_named(tmp_path, frame):
    table = pa.Table.from_pandas(frame(5), preserve_index=False)
    table = table.set_column(4, "close", pa.array([[1.0]] * 5))
    path = write_table(tmp_path / "nested.parquet", table)
    assert message(path) == f"{path}: column 'close' has type list<element: double>; expected numbers, text or timestamps"


# ---------------------------------------------------------------- the chunked read


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(collect, "CHUNK_ROWS", 7)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_chunked_read_gives_what_a_whole_file_read_gives(small_chunks, tmp_path, frame, monkeypatch, suffix):
    parts = [frame(40, seed=k).assign(symbol=name) for k, name in enumerate(["B", "A", "C"])]
    df = pd.concat(parts).sample(frac=1, random_state=0)  # symbols interleaved, rows out of order
    df.loc[df.index[:9], "volume"] = np.nan
    path = tmp_path / f"mixed{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else write_table(path, pa.Table.from_pandas(df, preserve_index=False))
    chunked = load(path, symbol_column="symbol")
    monkeypatch.setattr(collect, "CHUNK_ROWS", 10**9)
    same(chunked, load(path, symbol_column="symbol"))
    assert [s.name for s in chunked] == ["A", "B", "C"] and [len(s) for s in chunked] == [40, 40, 40]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_errors_in_later_chunks_count_the_whole_file(small_chunks, tmp_path, frame, suffix):
    df = frame(40)
    df["close"] = df["close"].astype(object)
    df.loc[[25, 33], "close"] = "abc"
    path = tmp_path / f"late{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else write_table(path, text_table(df.to_csv(index=False)))
    first = 27 if suffix == ".csv" else 26
    word = "line" if suffix == ".csv" else "row"
    assert message(path).startswith(f"{path}: column 'close', {word} {first}: 'abc' is not a number (2 such value(s))")


def test_a_date_order_proven_only_in_a_later_chunk(small_chunks, write_csv, caplog):
    days = pd.date_range("2024-01-01", periods=20, freq="1D")
    rows = [f"{d:%d/%m/%Y},1,1,1,1" for d in days]  # the first 12 days tell nothing; 13/01 proves day-first
    path = write_csv("eu.csv", "\n".join(["date,open,high,low,close"] + rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path)
    assert str(s.timestamps[12])[:10] == "2024-01-13"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: column 'date': read dates as day-first: line 14 has '13/01/2024' (no month 13); set data.dayfirst=true to say so"]


def test_naive_and_zone_aware_chunks_are_refused_as_in_one_chunk(small_chunks, write_csv):
    # one chunk of naive timestamps, the next all zone-aware: each alone would load
    rows = [f"2024-01-02 09:{m:02d}:00,1,1,1,1" for m in range(7)] + [f"2024-01-02 12:{m:02d}:00+01:00,1,1,1,1" for m in range(7)]
    path = write_csv("zones.csv", "\n".join(["timestamps,open,high,low,close"] + rows) + "\n")
    assert "has a UTC offset or zone ('2024-01-02 12:00:00+01:00') but line 2 has none" in message(path)


def test_chunks_read_in_one_unit_as_the_whole_file_is(small_chunks, write_csv):
    # epoch seconds, then epoch milliseconds: each chunk alone reads as 2023; the file as a whole
    # is read in one unit (milliseconds, by the median), so its first rows are in January 1970
    start = 1_700_000_000
    rows = [f"{start + 60 * k},1,1,1,1" for k in range(7)] + [f"{(start + 60 * k) * 1000},1,1,1,1" for k in range(7, 15)]
    path = write_csv("units.csv", "\n".join(["timestamps,open,high,low,close"] + rows) + "\n")
    [s] = load(path)
    assert [str(t)[:4] for t in s.timestamps] == ["1970"] * 7 + ["2023"] * 8
