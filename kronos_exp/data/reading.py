"""Files -> validated, named series: CSV through pyarrow's streaming CSV reader (and pandas'
C parser for the whole-file read that names an error), Parquet and Feather/Arrow through pyarrow
(`tables`), all checked the same way (`collect`).

Each file is one series, or, with `data.symbol_column`, one series per symbol value (see `paths`
for their names). The CSV separator (`,` `;` tab `|`) is sniffed from the header line; blank
lines are skipped; an optional column (volume, amount) that is entirely empty counts as missing.
Missing numbers ("", "null", "NaN", ...; Yahoo writes "null") follow `data.nan_policy`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from .assembly import Series
from . import collect
from .checks import TABLE_SUFFIXES
from .collect import Layout, ReadAgain, collect_series
from .columns import resolve_columns, symbol_column_hint
from .config import DataConfig, DataError, validate_config
from .csv_scan import check_fields, scan_csv
from .frame import FEATURES, TIMESTAMP
from .paths import resolve_paths, series_name, series_stems
from .tables import NA_TEXT, arrow_frame, read_table
from .timestamps import utc_offsets

Opener = Callable[[], BinaryIO]
ARROW_BLOCK = 1 << 22  # bytes per block of the fast CSV reader (joined into chunks of CHUNK_ROWS rows)


def load_series(settings: Any) -> list[Series]:
    """Read every file `settings` refers to and return its validated series (file order, then symbol order)."""
    c = validate_config(settings)
    paths = resolve_paths(c)
    series: list[Series] = []
    for stem, path in zip(series_stems(paths), paths):
        for symbol, s in read_file(path, c):
            s.name = series_name(stem, symbol, len(paths))
            series.append(s)
    return series


def _read_csv(source: Opener, file: str, **kwargs: Any) -> Any:
    """pd.read_csv of a file the checks passed; what pandas still refuses becomes a DataError."""
    try:
        with source() as fh:
            return pd.read_csv(fh, encoding="utf-8-sig", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{file}: cannot read it as CSV ({' '.join(str(e).split())})") from None


def _arrow_csv(source: Opener, file: str, sep: str, header: list[str], usecols: list[str],
               text_cols: list[str], numbers: list[str]) -> Iterator[pd.DataFrame]:
    """The fast read: pyarrow's streaming CSV reader, numbers as float64, text columns as text,
    CSV's missing strings as null. A row with another number of fields than the header, or a
    value that does not convert, stops it (the whole-file read then names the error)."""
    options = dict(
        read_options=pcsv.ReadOptions(column_names=header, skip_rows=1, block_size=ARROW_BLOCK),
        parse_options=pcsv.ParseOptions(delimiter=sep, ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(
            include_columns=usecols, null_values=NA_TEXT, strings_can_be_null=True,
            column_types={**{k: pa.float64() for k in numbers}, **{k: pa.string() for k in text_cols}}),
    )
    try:
        with source() as fh:
            reader = pcsv.open_csv(fh, **options)
            pending = pa.Table.from_batches([], schema=reader.schema)
            for batch in reader:
                pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
                while pending.num_rows >= collect.CHUNK_ROWS:
                    yield arrow_frame(pending.slice(0, collect.CHUNK_ROWS), file)
                    pending = pending.slice(collect.CHUNK_ROWS)
            if pending.num_rows:
                yield arrow_frame(pending, file)
    except pa.ArrowException:
        raise ReadAgain from None


def _timestamp_is_text(source: Opener, file: str, sep: str, column: Optional[str], c: DataConfig) -> bool:
    """Whether the fast read keeps the timestamp column as text: with data.timestamp_format, or
    when the first timestamp has a UTC offset (Arrow's timestamp type would drop its wall clock)."""
    if column is None or c.timestamp_format is not None:
        return True
    try:
        first = _read_csv(source, file, sep=sep, nrows=1, usecols=[column], dtype=str)[column]
    except DataError:
        return True
    return len(first) == 0 or first.isna().all() or utc_offsets(first) is not None


def read_file(path: Path, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    """Read and validate one file (CSV, or Parquet/Feather/Arrow by its suffix). Returns (symbol or
    None, series) pairs; names are set by the caller.

    The series record the sha256 of the file's bytes, hashed in blocks as they are checked; a
    file that changes while it is read is an error, so the digest is of what was trained on."""
    before = os.stat(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        out = read_table(path, str(path), c)
    else:
        out = _read_csv_source(lambda: open(path, "rb"), str(path), c)
    after = os.stat(path)
    pa.default_memory_pool().release_unused()  # the pool keeps what the read freed, for the run, unless told
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise DataError(f"{path}: the file changed while it was read; read it again once it is written")
    return out


def read_bytes(content: bytes, file: str, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    """read_file of CSV ``content`` that ``file`` names in messages (a served request's history, say)."""
    return _read_csv_source(lambda: io.BytesIO(content), file, c)


def _read_csv_source(source: Opener, file: str, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    scan = scan_csv(source, file)
    if scan is None:
        raise DataError(f"{file}: the file is empty; expected a header line such as timestamps,open,high,low,close")
    sep = scan.sep
    header = list(_read_csv(source, file, sep=sep, nrows=0).columns)
    cols, symbol_col = resolve_columns(header, c, file)
    usecols = list(dict.fromkeys(list(cols.values()) + ([symbol_col] if symbol_col else [])))
    # Text columns are read as text (keeps leading zeros of symbols); numeric timestamps are
    # re-read as numbers (timestamps.raw_timestamps) only when every value is numeric.
    text_cols = [k for k in (symbol_col, cols.get(TIMESTAMP), cols.get("date"), cols.get("time")) if k]
    fast_text = [k for k in text_cols if k != cols.get(TIMESTAMP)
                 or _timestamp_is_text(source, file, sep, k, c)]
    numbers = [cols[k] for k in FEATURES if k in cols]

    def chunks(whole: bool) -> Iterator[pd.DataFrame]:
        if not whole:
            yield from _arrow_csv(source, file, sep, header, usecols, fast_text, numbers)
            return
        check_fields(source, sep, file)
        yield _read_csv(source, file, sep=sep, usecols=usecols, dtype={k: str for k in text_cols},
                        skip_blank_lines=False)

    layout = Layout(file=file, cols=cols, symbol_col=symbol_col, first_line=2)
    others = [h for h in header if h not in set(cols.values())]

    def hint() -> str:
        return symbol_column_hint(_read_csv(source, file, sep=scan.sep, usecols=others, dtype=str) if others else None)

    return collect_series(chunks, layout, c, scan.digest, hint)
