"""CSV files -> validated, named series: the reader that runs the column, timestamp and value
checks on each file in turn.

Each file is one series, or, with `cfg.symbol_column`, one series per symbol value (see `paths`
for their names). The separator (`,` `;` tab `|`) is sniffed from the header line; blank lines
are skipped; an optional column (volume, amount) that is entirely empty counts as missing.
Missing numbers ("", "null", "NaN", ...; Yahoo writes "null") follow `cfg.nan_policy`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .assembly import DuplicateTimestampError, FileReport, Series, assemble_series
from .checks import check_bars, check_encoding, check_fields, check_not_negative, check_prices, parse_numeric, where
from .columns import resolve_columns, sniff_separator
from .config import DataConfig, DataError, validate_config
from .frame import FEATURES, TIMESTAMP
from .paths import resolve_paths, series_name, series_stems
from .timestamps import parse_timestamps, raw_timestamps, utc_offsets

log = logging.getLogger(__name__)


def load_series(cfg: Any) -> list[Series]:
    """Read every file `cfg` refers to and return its validated series (file order, then symbol order)."""
    c = validate_config(cfg)
    paths = resolve_paths(c)
    per_file = [read_file(path, c) for path in paths]
    series: list[Series] = []
    for stem, items in zip(series_stems(paths), per_file):
        for symbol, s in items:
            s.name = series_name(stem, symbol, len(paths))
            series.append(s)
    return series


def _read_csv(content: bytes, file: str, **kwargs: Any) -> pd.DataFrame:
    """pd.read_csv of a file the checks passed; what pandas still refuses becomes a DataError."""
    try:
        return pd.read_csv(io.BytesIO(content), encoding="utf-8-sig", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        reason = " ".join(str(e).split())
        raise DataError(f"{file}: cannot read it as CSV ({reason})") from None


def _symbol_column_hint(content: bytes, file: str, sep: str, header: list[str], used: set[str]) -> str:
    """For duplicate timestamps in a file read as one series: the columns of repeated text that
    look like a symbol, named with the data.symbol_column setting that splits the file by them."""
    others = [h for h in header if h not in used]
    candidates = []
    if others:
        df = _read_csv(content, file, sep=sep, usecols=others, dtype=str)
        for name in others:
            values = df[name].dropna().str.strip()
            numeric = pd.to_numeric(values, errors="coerce").notna().all()
            if len(values) and not numeric and values.nunique() < len(values):
                candidates.append(name)
    if not candidates:
        return "; if the file holds several series, name the column that tells them apart with data.symbol_column"
    return (f"; the file looks like several series in one: set data.symbol_column="
            f"{candidates[0]} (columns of repeated text: {', '.join(candidates)})")


def _header(content: bytes, file: str) -> tuple[str, list[str]]:
    """(separator, header names) of a UTF-8 file that has a header line."""
    check_encoding(content, file)
    with io.TextIOWrapper(io.BytesIO(content), encoding="utf-8-sig", errors="replace") as fh:
        header_line = fh.readline()
    if not header_line.strip():
        raise DataError(f"{file}: the file is empty; expected a header line such as timestamps,open,high,low,close")
    sep = sniff_separator(header_line)
    return sep, list(_read_csv(content, file, sep=sep, nrows=0).columns)


def _rows(content: bytes, file: str, sep: str, cols: dict[str, str], symbol_col: Optional[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The used columns of the non-blank rows, and each row's line in the file (header: line 1)."""
    usecols = list(dict.fromkeys(list(cols.values()) + ([symbol_col] if symbol_col else [])))
    text_cols = {k: str for k in (symbol_col, cols.get(TIMESTAMP), cols.get("date"), cols.get("time")) if k}
    # Text columns are read as text (keeps leading zeros of symbols); numeric timestamps are
    # re-read as numbers (timestamps.raw_timestamps) only when every value is numeric.
    df = _read_csv(content, file, sep=sep, usecols=usecols, dtype=text_cols, skip_blank_lines=False)
    lines = np.arange(len(df), dtype=np.int64) + 2
    blank = np.asarray(df.isna().all(axis=1))
    if blank.any():
        df, lines = df.loc[~blank].reset_index(drop=True), lines[~blank]
    if len(df) == 0:
        raise DataError(f"{file}: no data rows after the header")
    return df, lines


def _features(df: pd.DataFrame, cols: dict[str, str], file: str, lines: np.ndarray, c: DataConfig) -> dict[str, np.ndarray]:
    """The checked numeric columns by canonical name (an all-empty volume/amount is left out)."""
    feats: dict[str, np.ndarray] = {}
    for name in FEATURES:
        if name not in cols:
            continue
        values = parse_numeric(df[cols[name]], file, cols[name], lines)
        if name in ("volume", "amount"):
            if np.isnan(values).all():
                log.info("%s: column %r is empty; treated as missing", file, cols[name])
                continue
            check_not_negative(values, name, file, cols[name], lines)
        feats[name] = values
    check_prices(feats, cols, file, lines)
    check_bars(feats, file, lines, c)
    return feats


def _by_symbol(sym: pd.Series, file: str, column: str, lines: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(symbol, its row indices in file order) for each symbol, in sorted symbol order."""
    if sym.isna().any():
        i = int(np.argmax(np.asarray(sym.isna())))
        raise DataError(f"{where(file, column, lines[i])}: empty symbol; every row needs one")
    codes, uniques = pd.factorize(sym.astype(str).str.strip(), sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniques)))])
    return [(str(symbol), order[bounds[k]: bounds[k + 1]]) for k, symbol in enumerate(uniques)]


def read_file(path: Path, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    """Read and validate one CSV. Returns (symbol or None, series) pairs; names are set by the caller.

    The file is read once: every check parses those bytes, and their sha256 is what the series
    record as their source's content (the fingerprint hashes what was trained on, even if the
    file changes meanwhile)."""
    return read_bytes(path.read_bytes(), str(path), c)


def read_bytes(content: bytes, file: str, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    """read_file of CSV ``content`` that ``file`` names in messages (a served request's history, say)."""
    digest = hashlib.sha256(content).hexdigest()
    sep, header = _header(content, file)
    cols, symbol_col = resolve_columns(header, c, file)
    check_fields(content, sep, file)
    df, lines = _rows(content, file, sep, cols, symbol_col)
    raw_ts, ts_name = raw_timestamps(df, cols, file, lines)
    ts = parse_timestamps(raw_ts, c, file, ts_name, lines)
    offsets = utc_offsets(raw_ts)
    feats = _features(df, cols, file, lines, c)

    report = FileReport()
    out: list[tuple[Optional[str], Series]] = []
    if symbol_col is None:
        try:
            out.append((None, assemble_series("", file, ts, feats, lines, c, report, offsets)))
        except DuplicateTimestampError as err:
            raise DuplicateTimestampError(
                f"{err}{_symbol_column_hint(content, file, sep, header, set(cols.values()))}") from None
    else:
        for symbol, rows in _by_symbol(df[symbol_col], file, symbol_col, lines):
            group = {name: v[rows] for name, v in feats.items()}
            series = assemble_series(symbol, file, ts[rows], group, lines[rows], c, report,
                                     None if offsets is None else offsets[rows])
            out.append((symbol, series))
    report.log_to(file, c, by_symbol=symbol_col is not None)
    for _, series in out:
        series.source_sha256 = digest
    return out
