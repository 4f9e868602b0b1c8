"""Property: whatever a malformed CSV looks like, `build_datasets` either returns finite, valid
windows (after a documented repair: ffill, drop, sorting, data.repair=clip) or raises a one-line
DataError, never another exception.

The CSVs are mutations of a small valid file: corrupted cells, swapped or deleted columns, garbage
lines, ragged rows, duplicated and shuffled rows, other timestamp formats and zones, extreme or
constant values, NaN bursts, other separators, line endings and encodings, stray or truncated bytes.
The same mutations as Parquet tables (text or typed columns) obey the same property and, as text,
load exactly as their CSV does; and the chunked read (pyarrow, float32) gives exactly what the
whole-file read (pandas, float64) gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import kronos_exp.data.collect as collect
from kronos_exp.data import DataConfig, DataError, build_datasets, load_series
from kronos_exp.data.checks import BAR_TOLERANCE

COLUMNS = ["timestamps", "open", "high", "low", "close", "volume", "amount"]
ROWS = 48  # lookback 4 + predict 2 + 1 = 7 rows per split; val and test get 9
CLIP = 5.0

CELLS = st.one_of(
    st.sampled_from([
        "", "nan", "null", "abc", "inf", "-inf", "0", "-1", "-0.5", "1e39", "1e300", "1e-300", "3e37",
        "True", "FALSE", "2300-01-01", "1600-01-01", "13/01/2024", "2024-01-02 09:30:00+01:00",
        "2024-01-02T09:30:00Z", "  ", '"', "1,5", "1;5", "٣", "0x10", "1_000", "€",
    ]),
    st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
TIME_FORMATS = ["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d.%m.%Y", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S%z", "epoch_s", "epoch_ms", "%Y%m%d"]


def _base(frame, seed: int, freq: str) -> tuple[list[str], list[list[str]]]:
    df = frame(ROWS, freq=freq, seed=seed)
    stamps = df["timestamps"].dt.strftime("%Y-%m-%d %H:%M:%S").tolist()
    rows = [[t] + [repr(float(v)) for v in values] for t, values in zip(stamps, df[COLUMNS[1:]].to_numpy())]
    return list(COLUMNS), rows


def _reformat_times(rows: list[list[str]], fmt: str) -> None:
    for row in rows:
        try:
            t = pd.Timestamp(row[0])
        except (ValueError, OverflowError):  # a cell an earlier mutation corrupted stays as it is
            continue
        if t is pd.NaT:
            continue
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        if fmt == "epoch_s":
            row[0] = str(int(t.timestamp()))
        elif fmt == "epoch_ms":
            row[0] = str(int(t.timestamp() * 1000))
        elif fmt.endswith("%z"):
            row[0] = t.tz_localize("Europe/Berlin").strftime(fmt)
        else:
            row[0] = t.strftime(fmt)


@st.composite
def malformed_rows(draw, frame) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a small valid file after 0-3 mutations, as text cells."""
    header, rows = _base(frame, draw(st.integers(0, 3)), draw(st.sampled_from(["5min", "1D", "1h"])))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([
            "cell", "cell", "swap", "garbage", "drop_field", "add_field", "duplicate", "shuffle", "scale",
            "constant", "zone", "times", "nan_burst", "delete_column", "rename", "every_row_extra",
        ]))
        n = len(rows)
        if kind == "cell" and n:
            i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, len(header) - 1))
            if j < len(rows[i]):
                rows[i][j] = draw(CELLS)
        elif kind == "swap":
            j, k = draw(st.integers(0, len(header) - 1)), draw(st.integers(0, len(header) - 1))
            for row in rows:
                if max(j, k) < len(row):
                    row[j], row[k] = row[k], row[j]
        elif kind == "garbage":
            text = draw(st.text(max_size=30))
            rows.insert(draw(st.integers(0, n)), [text])
        elif kind == "drop_field" and n:
            row = rows[draw(st.integers(0, n - 1))]
            if row:
                row.pop(draw(st.integers(0, len(row) - 1)))
        elif kind == "add_field" and n:
            rows[draw(st.integers(0, n - 1))].append(draw(CELLS))
        elif kind == "duplicate" and n:
            i = draw(st.integers(0, n - 1))
            rows.insert(draw(st.integers(0, n)), list(rows[i]))
        elif kind == "shuffle":
            rows[:] = draw(st.permutations(rows))
        elif kind == "scale":
            j = draw(st.integers(1, len(header) - 1))
            factor = draw(st.sampled_from([1e30, 1e-30, -1.0, 0.0, 1e38]))
            for row in rows:
                try:
                    row[j] = repr(float(row[j]) * factor)
                except (ValueError, IndexError):
                    pass
        elif kind == "constant":
            for row in rows:
                row[1:5] = ["5.0"] * 4
        elif kind == "zone" and n:
            i = draw(st.integers(0, n - 1))
            rows[i][0] = rows[i][0] + draw(st.sampled_from(["+01:00", "Z", " UTC", "-0500"]))
        elif kind == "times":
            _reformat_times([r for r in rows if len(r) == len(header)], draw(st.sampled_from(TIME_FORMATS)))
        elif kind == "nan_burst" and n:
            i, j = draw(st.integers(0, n - 1)), draw(st.integers(1, len(header) - 1))
            for row in rows[i : i + draw(st.integers(1, 6))]:
                if j < len(row):
                    row[j] = ""
        elif kind == "delete_column":
            j = draw(st.integers(0, len(header) - 1))
            header.pop(j)
            for row in rows:
                if j < len(row):
                    row.pop(j)
        elif kind == "rename":
            header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(["Close", "x", "", "date", "Open "]))
        elif kind == "every_row_extra":
            for row in rows:
                row.insert(0, str(len(row)))
    return header, rows


@st.composite
def malformed_csv(draw, frame) -> bytes:
    header, rows = draw(malformed_rows(frame))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(sep.join(r) for r in [header] + rows) + newline
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    edit = draw(st.sampled_from(["none", "none", "none", "truncate", "bytes"]))
    if edit == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif edit == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


def _check_valid(splits, cfg: DataConfig) -> None:
    """What a successful build promises: finite, clipped windows over sane, sorted series."""
    for ds in (splits.train, splits.val, splits.test):
        assert len(ds) > 0
        x, stamp = ds.batch(range(len(ds)))
        assert np.isfinite(x.numpy()).all() and float(x.abs().max()) <= cfg.clip
        assert np.isfinite(stamp.numpy()).all()
    for s in splits.series:
        v = s.values.astype(np.float64)
        assert np.isfinite(v).all() and (v[:, :4] > 0).all() and (v[:, 4:] >= 0).all()
        assert (np.diff(s.timestamps) > np.timedelta64(0, "ns")).all()
        assert np.ptp(v[:, :4], axis=0).max() > 0
        if cfg.nan_policy != "ffill":  # forward-filling columns one by one may pair values of different bars
            o, h, l, c = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
            tol = BAR_TOLERANCE * np.maximum(h, l) * 2
            assert (h >= l - tol).all()
            for p in (o, c):
                assert ((p >= l - tol) & (p <= h + tol)).all()


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return tmp_path_factory.mktemp("property") / "prices.csv"


# `frame` is a stateless helper; `csv_path` is rewritten by every example.
PROPERTY = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
POLICIES = dict(
    nan_policy=st.sampled_from(["ffill", "drop", "error"]),
    repair=st.sampled_from(["none", "clip"]),
    dayfirst=st.sampled_from([None, True, False]),
)


def _valid_windows_or_a_one_line_error(path, nan_policy, repair, dayfirst) -> None:
    cfg = DataConfig(path=str(path), lookback_window=4, predict_window=2, train_ratio=0.6, val_ratio=0.2,
                     test_ratio=0.2, clip=CLIP, nan_policy=nan_policy, repair=repair, dayfirst=dayfirst)
    try:
        splits = build_datasets(cfg)
    except DataError as e:
        message = str(e)
        assert message.strip() and "\n" not in message, message
        return
    _check_valid(splits, cfg)


@PROPERTY
@given(data=st.data(), **POLICIES)
def test_malformed_csv_gives_valid_windows_or_a_one_line_data_error(frame, csv_path, data, nan_policy, repair, dayfirst):
    csv_path.write_bytes(data.draw(malformed_csv(frame), label="csv"))
    _valid_windows_or_a_one_line_error(csv_path, nan_policy, repair, dayfirst)


def _column(cells: list[str], typed: bool, timestamps: bool) -> pa.Array:
    """A table column of text cells: as text, or (typed) as numbers or a naive timestamp type
    when every cell converts ("" is missing)."""
    if typed and timestamps:
        try:
            parsed = pd.to_datetime(pd.Series(cells).replace("", None), format="ISO8601")
            if parsed.dt.tz is None:
                return pa.array(parsed, type=pa.timestamp("ns"))
        except (ValueError, TypeError, OverflowError):
            pass
    if typed and not timestamps:
        try:
            return pa.array([float(c) if c != "" else None for c in cells], type=pa.float64())
        except ValueError:
            pass
    return pa.array(cells, type=pa.string())


@PROPERTY
@given(data=st.data(), typed=st.booleans(), **POLICIES)
def test_malformed_parquet_gives_valid_windows_or_a_one_line_data_error(frame, csv_path, data, typed, nan_policy,
                                                                       repair, dayfirst):
    """The same mutations as a Parquet table, where the format can hold them: a row of another
    length than the header is padded with empty cells or cut (a table has no ragged rows), and
    separators, line ends, encodings and stray bytes have no equivalent (a damaged Parquet file
    has its own test in test_data_tables.py)."""
    header, rows = data.draw(malformed_rows(frame), label="rows")
    assume(len(set(header)) == len(header))  # a table's column names are distinct
    rows = [(row + [""] * len(header))[: len(header)] for row in rows]
    columns = [_column([row[j] for row in rows], typed, j == 0) for j in range(len(header))]
    path = csv_path.with_suffix(".parquet")
    pq.write_table(pa.Table.from_arrays(columns, names=header), path)
    _valid_windows_or_a_one_line_error(path, nan_policy, repair, dayfirst)


def _outcome(cfg: DataConfig):
    """What load_series gives: ("error", message) or ("series", names, timestamps, values)."""
    try:
        series = load_series(cfg)
    except DataError as e:
        return ("error", str(e))
    return ("series", [s.name for s in series], [s.timestamps.tolist() for s in series],
            [s.values.tobytes() for s in series])


@PROPERTY
@given(data=st.data(), chunk=st.sampled_from([1, 5, 16, 10**6]), **POLICIES)
def test_the_chunked_read_gives_what_a_whole_file_read_gives(frame, csv_path, data, nan_policy, repair, dayfirst, chunk):
    """The chunked read (pyarrow, float32, chunks of `chunk` rows) loads a file only where the
    whole-file read (pandas, float64) loads it, to the same series; otherwise it gives the
    whole-file read's error."""
    csv_path.write_bytes(data.draw(malformed_csv(frame), label="csv"))
    cfg = DataConfig(path=str(csv_path), clip=CLIP, nan_policy=nan_policy, repair=repair, dayfirst=dayfirst)
    whole_file_read = collect._collect
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(collect, "CHUNK_ROWS", chunk)
        chunked = _outcome(cfg)
        mp.setattr(collect, "_collect", lambda chunks, layout, c, chunked: whole_file_read(chunks, layout, c, False))
        whole = _outcome(cfg)
    assert chunked == whole


@PROPERTY
@given(data=st.data(), **POLICIES)
def test_a_parquet_table_of_text_loads_as_the_csv_of_the_same_cells(frame, csv_path, data, nan_policy, repair, dayfirst):
    """The same cells as a CSV and as a Parquet table of text columns give the same series, or
    both an error (rows of another length than the header are evened out first, as above)."""
    header, rows = data.draw(malformed_rows(frame), label="rows")
    assume(len(set(header)) == len(header))
    rows = [(row + [""] * len(header))[: len(header)] for row in rows]
    assume(all('"' not in cell and "," not in cell and "\n" not in cell and "\r" not in cell for r in [header] + rows for cell in r))
    csv_path.write_text("\n".join(",".join(r) for r in [header] + rows) + "\n", encoding="utf-8", errors="surrogatepass")
    table_path = csv_path.with_suffix(".parquet")
    pq.write_table(pa.Table.from_arrays([pa.array([r[j] for r in rows], type=pa.string()) for j in range(len(header))],
                                        names=header), table_path)
    settings_ = dict(clip=CLIP, nan_policy=nan_policy, repair=repair, dayfirst=dayfirst)
    from_csv = _outcome(DataConfig(path=str(csv_path), **settings_))
    from_table = _outcome(DataConfig(path=str(table_path), **settings_))
    event(from_csv[0])
    assert from_csv[0] == from_table[0], (from_csv[:2], from_table[:2])
    if from_csv[0] == "series":
        assert from_csv[2:] == from_table[2:]


def test_the_unmutated_file_builds(frame, csv_path):
    """The base the mutations start from is valid (so a DataError above is the mutation's doing)."""
    for seed, freq in ((0, "5min"), (3, "1D")):
        header, rows = _base(frame, seed, freq)
        csv_path.write_text("\n".join(",".join(r) for r in [header] + rows) + "\n")
        cfg = DataConfig(path=str(csv_path), lookback_window=4, predict_window=2, train_ratio=0.6, val_ratio=0.2,
                         test_ratio=0.2)
        _check_valid(build_datasets(cfg), cfg)
