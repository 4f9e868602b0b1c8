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
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

import numpy as np
import pandas as pd

from ..heap import trim_heap
from .assembly import DuplicateTimestampError, FileReport, Series, assemble_series
from .checks import check_bars, check_not_negative, check_prices, parse_numeric, where
from .config import DataConfig, DataError
from .frame import FEATURES
from .timestamps import date_order, parse_timestamps, raw_timestamps, timestamp_kind, utc_offsets

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 18  # rows per chunk: its text and temporaries are what a read holds beyond the result
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


@dataclasses.dataclass
class _Piece:
    """The rows of one series that one chunk holds."""

    ts: np.ndarray  # datetime64[ns] instants
    offsets: Optional[np.ndarray]  # timedelta64[ns], or None when the file writes no offsets
    lines: np.ndarray
    values: np.ndarray  # [n, len(names)], float32 (float64 in a whole-file read)

    def take(self, rows: np.ndarray) -> "_Piece":
        """The rows (increasing indices) as a new piece: views when they are a run, as in a file
        sorted by symbol, else copies."""
        if rows[-1] - rows[0] == len(rows) - 1:
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        return _Piece(self.ts[rows], None if self.offsets is None else self.offsets[rows], self.lines[rows],
                      self.values[rows])


def _join(pieces: list[_Piece]) -> _Piece:
    """One piece of a series' pieces (in file order)."""
    if len(pieces) == 1:
        return pieces[0]
    offsets = None if pieces[0].offsets is None else np.concatenate([p.offsets for p in pieces])
    return _Piece(np.concatenate([p.ts for p in pieces]), offsets, np.concatenate([p.lines for p in pieces]),
                  np.concatenate([p.values for p in pieces]))


class _Collector:
    """The checked rows of a file's chunks, kept per series as compact pieces, so that each
    series is assembled (and its pieces let go) in turn."""

    def __init__(self, layout: Layout, c: DataConfig, chunked: bool):
        self.layout, self.c, self.chunked = layout, c, chunked
        self.dtype = np.float32 if chunked else np.float64
        self.report = FileReport()
        self.names = [k for k in FEATURES if k in layout.cols]
        self.filled = dict.fromkeys(self.names, False)  # has the column any value?
        self.pieces: dict[int, list[_Piece]] = {}  # symbol id (0 without a symbol column) -> pieces
        self.symbols: dict[str, int] = {}
        self.zoned: set[bool] = set()  # whether chunks carry UTC offsets
        self.kind: Optional[tuple] = None  # the first chunk's timestamp kind; the others must match
        self.read = 0  # rows read so far, blank ones included

    def add(self, df: pd.DataFrame) -> None:
        lay, c = self.layout, self.c
        lines = np.arange(self.read, self.read + len(df), dtype=np.int32 if self.read + len(df) < 2**31 - 2 else np.int64)
        lines += lay.first_line
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
        offsets = utc_offsets(raw)
        self.zoned.add(offsets is not None)
        piece = _Piece(ts, offsets, lines, self._features(df, lines))
        if lay.symbol_col is None:
            self.pieces.setdefault(0, []).append(piece)
            return
        codes = self._symbols(df[lay.symbol_col], lines)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for code in np.flatnonzero(counts):
            self.pieces.setdefault(int(code), []).append(piece.take(order[bounds[code]: bounds[code + 1]]))

    def _same_kind(self, raw: pd.Series) -> None:
        kind = timestamp_kind(raw, self.c)
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            raise ReadAgain

    def _features(self, df: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
        """The checked numeric columns of a chunk, [rows, len(names)]."""
        lay = self.layout
        feats = {}
        for name in self.names:
            values = parse_numeric(df[lay.cols[name]], lay.file, lay.cols[name], lines)
            if name in ("volume", "amount"):
                check_not_negative(values, name, lay.file, lay.cols[name], lines)
            feats[name] = values
        check_prices(feats, lay.cols, lay.file, lines)
        self.report.add_clipped(check_bars(feats, lay.file, lines, self.c))
        out = np.empty((len(df), len(self.names)), dtype=self.dtype)
        for k, (name, values) in enumerate(feats.items()):
            if self.chunked:
                _fits_float32(values, self.c)
            self.filled[name] = self.filled[name] or not np.isnan(values).all()
            out[:, k] = values
        return out

    def _symbols(self, sym: pd.Series, lines: np.ndarray) -> np.ndarray:
        """Each row's symbol id (ids in order of first appearance in the file)."""
        if sym.isna().any():
            i = int(np.argmax(np.asarray(sym.isna())))
            raise DataError(f"{where(self.layout.file, self.layout.symbol_col, lines[i])}: empty symbol; every row needs one")
        codes, uniques = pd.factorize(sym)  # then strip the few distinct values, not every row
        ids = np.array([self.symbols.setdefault(str(u).strip(), len(self.symbols)) for u in uniques], dtype=np.int64)
        return ids[codes]

    def series(self) -> list[tuple[Optional[str], Series]]:
        """The file's series: (symbol or None, series) in symbol order."""
        lay = self.layout
        if not self.pieces:
            raise DataError(f"{lay.file}: no data rows after the header")
        if len(self.zoned) > 1:
            raise ReadAgain  # zone-aware text in some chunks only: the whole-file read names one of each
        optional = [name for name in self.names if name in ("volume", "amount") and not self.filled[name]]
        for name in optional:
            log.info("%s: column %r is empty; treated as missing", lay.file, lay.cols[name])
        keep = [k for k, name in enumerate(self.names) if name not in optional]
        order = sorted(self.symbols.items()) if lay.symbol_col is not None else [("", 0)]
        # The file's series end to end in one array each (their arrays are views): the rows in two
        # large blocks, which go back to the system whole, not in many small heap blocks that
        # stay resident after they are freed; and build_datasets' panel, when one file is read.
        total = sum(len(p.ts) for pieces in self.pieces.values() for p in pieces)
        values = np.empty((total, len(FEATURES)), dtype=np.float32)
        timestamps = np.empty(total, dtype="datetime64[ns]")
        out: list[tuple[Optional[str], Series]] = []
        at = freed = 0
        every = max(4 * CHUNK_ROWS, total // 16)  # rows between trims: a sixteenth of the file at most held twice
        for symbol, code in order:
            rows = _join(self.pieces.pop(code))  # its pieces are let go once it is assembled
            feats = {self.names[k]: rows.values[:, k] for k in keep}
            series = assemble_series(symbol, lay.file, rows.ts, feats, rows.lines, self.c, self.report, rows.offsets,
                                     into=(values[at:], timestamps[at:]))
            at += len(series)
            out.append((symbol if lay.symbol_col is not None else None, series))
            freed += len(series)
            if freed >= every:  # the pieces let go so far: back to the system as the block fills
                trim_heap()
                freed = 0
        return out


def _fits_float32(values: np.ndarray, c: DataConfig) -> None:
    """A value check_magnitude would refuse would be lost in the float32 cast: read it whole."""
    limit = float(np.finfo(np.float32).max) / (2 * c.clip + 1)
    tiny = float(np.finfo(np.float32).tiny)
    magnitude = np.abs(values)
    if np.fmax.reduce(magnitude, initial=0.0) > limit:  # fmax: missing values (NaN) are not values
        raise ReadAgain
    if (magnitude < tiny).any() and ((values != 0) & (magnitude < tiny)).any():
        raise ReadAgain


@contextmanager
def _held_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold what the data modules log in this thread (a served model reads requests in several);
    the caller replays it if the attempt stands."""
    held: list[logging.LogRecord] = []
    loggers = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict) if n.startswith(__package__ + ".")]
    thread = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        if record.thread != thread:
            return True
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
        with _held_logs() as held:
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
