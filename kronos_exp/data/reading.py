"""Files -> validated, named series: CSV through pandas' C parser, Parquet and Feather/Arrow
through pyarrow (`tables`), both checked the same way (`collect`).

Each file is one series, or, with `cfg.symbol_column`, one series per symbol value (see `paths`
for their names). The CSV separator (`,` `;` tab `|`) is sniffed from the header line; blank
lines are skipped; an optional column (volume, amount) that is entirely empty counts as missing.
Missing numbers ("", "null", "NaN", ...; Yahoo writes "null") follow `cfg.nan_policy`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Optional

import pandas as pd

from .assembly import Series
from .checks import TABLE_SUFFIXES
from .collect import Layout, collect_series
from .columns import resolve_columns, symbol_column_hint
from .config import DataConfig, DataError, validate_config
from .csv_scan import scan_csv
from .frame import TIMESTAMP
from .paths import resolve_paths, series_name, series_stems
from .tables import read_table

Opener = Callable[[], BinaryIO]


def load_series(cfg: Any) -> list[Series]:
    """Read every file `cfg` refers to and return its validated series (file order, then symbol order)."""
    c = validate_config(cfg)
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


def _csv_chunks(source: Opener, file: str, **kwargs: Any) -> Callable[[Optional[int]], Iterator[pd.DataFrame]]:
    """The frames of a CSV in chunks of `rows` rows (None: the whole file at once)."""

    def chunks(rows: Optional[int]) -> Iterator[pd.DataFrame]:
        if rows is None:
            yield _read_csv(source, file, **kwargs)
            return
        try:
            with source() as fh, pd.read_csv(fh, encoding="utf-8-sig", chunksize=rows, **kwargs) as reader:
                yield from reader
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise DataError(f"{file}: cannot read it as CSV ({' '.join(str(e).split())})") from None

    return chunks


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
    header = list(_read_csv(source, file, sep=scan.sep, nrows=0).columns)
    cols, symbol_col = resolve_columns(header, c, file)
    scan.check_fields(file)
    usecols = list(dict.fromkeys(list(cols.values()) + ([symbol_col] if symbol_col else [])))
    # Text columns are read as text (keeps leading zeros of symbols); numeric timestamps are
    # re-read as numbers (timestamps.raw_timestamps) only when every value is numeric.
    text_cols = {k: str for k in (symbol_col, cols.get(TIMESTAMP), cols.get("date"), cols.get("time")) if k}
    chunks = _csv_chunks(source, file, sep=scan.sep, usecols=usecols, dtype=text_cols, skip_blank_lines=False)
    layout = Layout(file=file, cols=cols, symbol_col=symbol_col, first_line=2)
    others = [h for h in header if h not in set(cols.values())]

    def hint() -> str:
        return symbol_column_hint(_read_csv(source, file, sep=scan.sep, usecols=others, dtype=str) if others else None)

    return collect_series(chunks, layout, c, scan.digest, hint)
