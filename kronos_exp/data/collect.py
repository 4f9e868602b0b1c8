"""Frames of rows (CSV chunks, Parquet/Arrow record batches) -> checked, typed columns of the
whole file -> its series, with memory bounded by the result.

A file is read in chunks of `CHUNK_ROWS` rows; each chunk is checked (timestamps, numbers, prices,
bars, symbols) and kept only as compact arrays (instants, float32 features, symbol codes), so the
text of the whole file is never held. Checks whose message counts or compares the whole file
(the bad values of a column, a date order, a timestamp format, zone-aware next to naive) cannot be
judged on one chunk: whenever the chunked read meets any error or a chunk that disagrees with the
first, the file is read again as one chunk in float64, the way it always was, and that read's
result or error is the answer. So every message is the one a whole-file read gives, and a valid
file loads with one pass over its rows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

import numpy as np
import pandas as pd

from .assembly import DuplicateTimestampError, FileReport, Series, assemble_series
from .checks import check_bars, check_not_negative, check_prices, parse_numeric, where
from .config import DataConfig, DataError
from .frame import FEATURES
from .timestamps import date_order, parse_timestamps, raw_timestamps, timestamp_kind, utc_offsets

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 20  # rows per chunk, where the reader chooses by rows
Chunks = Callable[[bool], Iterator[pd.DataFrame]]  # whole (one frame, the reader that names errors)? -> frames


class ReadAgain(Exception):
    """A chunk that a whole-file read might judge differently: read the file again as one chunk."""


@dataclasses.dataclass
class Layout:
    """Which column of a file's frames is what, and how its rows are numbered in messages."""

    file: str
    cols: dict[str, str]  # canonical name -> column
    symbol_col: Optional[str]
    first_line: int  # the number of the first row: 2 for a CSV (header = line 1), 1 for a table


class _Collector:
    """The checked columns of a file's chunks, kept as compact arrays."""

    def __init__(self, layout: Layout, c: DataConfig, chunked: bool):
        self.layout, self.c, self.chunked = layout, c, chunked
        self.dtype = np.float32 if chunked else np.float64
        self.report = FileReport()
        self.ts: list[np.ndarray] = []
        self.offsets: list[Optional[np.ndarray]] = []
        self.lines: list[np.ndarray] = []
        self.feats: dict[str, list[np.ndarray]] = {k: [] for k in FEATURES if k in layout.cols}
        self.codes: list[np.ndarray] = []
        self.symbols: dict[str, int] = {}
        self.kind: Optional[tuple] = None  # the first chunk's timestamp kind; the others must match
        self.read = 0  # rows read so far, blank ones included

    def add(self, df: pd.DataFrame) -> None:
        lay, c = self.layout, self.c
        lines = np.arange(len(df), dtype=np.int64) + self.read + lay.first_line
        self.read += len(df)
        blank = np.asarray(df.isna().all(axis=1))
        if blank.any():
            df, lines = df.loc[~blank].reset_index(drop=True), lines[~blank]
        if len(df) == 0:
            if not self.chunked:
                raise DataError(f"{lay.file}: no data rows after the header")
            return
        raw, ts_name = raw_timestamps(df, lay.cols, lay.file, lines)
        if self.chunked:  # later chunks read dates in the order the first one proved, in its format
            if c.dayfirst is None and c.timestamp_format is None and timestamp_kind(raw, c)[0] == "text":
                self.c = c = dataclasses.replace(c, dayfirst=date_order(raw, c, lay.file, ts_name, lines))
            self._same_kind(raw)
        ts = parse_timestamps(raw, c, lay.file, ts_name, lines)
        self.ts.append(ts)
        self.offsets.append(utc_offsets(raw))
        self.lines.append(lines)
        self._features(df, lines)
        if lay.symbol_col is not None:
            self._symbols(df[lay.symbol_col], lines)

    def _same_kind(self, raw: pd.Series) -> None:
        kind = timestamp_kind(raw, self.c)
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            raise ReadAgain

    def _features(self, df: pd.DataFrame, lines: np.ndarray) -> None:
        lay = self.layout
        feats = {}
        for name in self.feats:
            values = parse_numeric(df[lay.cols[name]], lay.file, lay.cols[name], lines)
            if name in ("volume", "amount"):
                check_not_negative(values, name, lay.file, lay.cols[name], lines)
            feats[name] = values
        check_prices(feats, lay.cols, lay.file, lines)
        self.report.add_clipped(check_bars(feats, lay.file, lines, self.c))
        for name, values in feats.items():
            if self.chunked:
                _fits_float32(values, self.c)
            self.feats[name].append(values.astype(self.dtype, copy=False))

    def _symbols(self, sym: pd.Series, lines: np.ndarray) -> None:
        if sym.isna().any():
            i = int(np.argmax(np.asarray(sym.isna())))
            raise DataError(f"{where(self.layout.file, self.layout.symbol_col, lines[i])}: empty symbol; every row needs one")
        codes, uniques = pd.factorize(sym)  # then strip the few distinct values, not every row
        ids = np.array([self.symbols.setdefault(str(u).strip(), len(self.symbols)) for u in uniques], dtype=np.int32)
        self.codes.append(ids[codes])

    def series(self) -> list[tuple[Optional[str], Series]]:
        """The file's series: (symbol or None, series) in symbol order."""
        lay = self.layout
        if not self.ts:
            raise DataError(f"{lay.file}: no data rows after the header")
        has_offsets = {o is not None for o in self.offsets}
        if len(has_offsets) > 1:
            raise ReadAgain  # zone-aware text in some chunks only: the whole-file read names one of each
        ts, lines = _joined(self.ts), _joined(self.lines)
        offsets = None if has_offsets == {False} else _joined(self.offsets)
        feats = {}
        for name, parts in self.feats.items():
            values = _joined(parts)
            if name in ("volume", "amount") and np.isnan(values).all():
                log.info("%s: column %r is empty; treated as missing", lay.file, lay.cols[name])
                continue
            feats[name] = values
        if lay.symbol_col is None:
            return [(None, assemble_series("", lay.file, ts, feats, lines, self.c, self.report, offsets))]
        out = []
        for symbol, rows in self._groups():
            group = {name: v[rows] for name, v in feats.items()}
            out.append((symbol, assemble_series(symbol, lay.file, ts[rows], group, lines[rows], self.c, self.report,
                                                None if offsets is None else offsets[rows])))
        return out

    def _groups(self) -> Iterator[tuple[str, np.ndarray]]:
        """(symbol, its row indices in file order) for each symbol, in sorted symbol order."""
        names = list(self.symbols)
        rank = np.empty(len(names), dtype=np.int32)
        rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names), dtype=np.int32)
        codes = rank[_joined(self.codes)]
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names)))])
        for k, symbol in enumerate(sorted(names)):
            yield symbol, order[bounds[k]: bounds[k + 1]]


def _joined(parts: list) -> np.ndarray:
    """One array of a column's chunks; the chunks are let go as it is built."""
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    parts.clear()
    return out


def _fits_float32(values: np.ndarray, c: DataConfig) -> None:
    """A value check_magnitude would refuse would be lost in the float32 cast: read it whole."""
    limit = float(np.finfo(np.float32).max) / (2 * c.clip + 1)
    tiny = float(np.finfo(np.float32).tiny)
    magnitude = np.abs(values)
    if (magnitude > limit).any() or ((values != 0) & (magnitude < tiny)).any():
        raise ReadAgain


@contextmanager
def _held_logs(hold: bool) -> Iterator[list[logging.LogRecord]]:
    """Hold what the data modules log while `hold`; the caller replays it if the attempt stands."""
    held: list[logging.LogRecord] = []
    if not hold:
        yield held
        return
    loggers = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict) if n.startswith(__package__ + ".")]

    def keep(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    for lg in loggers:
        lg.addFilter(keep)
    try:
        yield held
    finally:
        for lg in loggers:
            lg.removeFilter(keep)


def _collect(chunks: Chunks, layout: Layout, c: DataConfig, chunked: bool) -> list[tuple[Optional[str], Series]]:
    collector = _Collector(layout, c, chunked)
    for df in chunks(not chunked):
        collector.add(df)
    out = collector.series()
    collector.report.log_to(layout.file, c, by_symbol=layout.symbol_col is not None)
    return out


def collect_series(chunks: Chunks, layout: Layout, c: DataConfig, digest: str,
                   duplicate_hint: Callable[[], str]) -> list[tuple[Optional[str], Series]]:
    """The validated series of a file whose rows `chunks` yields (symbol or None, series)."""
    try:
        with _held_logs(True) as held:
            out = _collect(chunks, layout, c, chunked=True)
        for record in held:
            logging.getLogger(record.name).handle(record)
    except (DataError, ReadAgain):
        try:
            out = _collect(chunks, layout, c, chunked=False)
        except DuplicateTimestampError as err:
            if layout.symbol_col is not None:
                raise
            raise DuplicateTimestampError(f"{err}{duplicate_hint()}") from None
    for _, series in out:
        series.source_sha256 = digest
    return out
