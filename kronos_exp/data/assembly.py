"""Checked columns of one series -> a `Series`: time order, duplicates, the NaN policy and the
volume/amount rules.

Unsorted input is sorted (stable), with one warning per file. Duplicate timestamps (within a
series) are an error. Missing numbers follow `data.nan_policy`: `ffill` (leading gaps that cannot
be filled are dropped), `drop` the row, or `error`; the count is logged once per file. `volume`
missing -> 0; `amount` missing -> volume x mean(open, high, low, close) (`frame.volume_and_amount`), of
the float32 values the series keeps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from .checks import check_magnitude, line_word, where
from .config import DataConfig, DataError
from .frame import FEATURES, PRICE_COLUMNS, volume_and_amount

log = logging.getLogger(__name__)


@dataclass
class Series:
    """One time series: rows sorted by time, no missing values."""

    name: str
    source: str  # the file it was read from
    timestamps: np.ndarray  # datetime64[ns], [T], wall-clock time as written, in time order
    values: np.ndarray  # float32, [T, 6] in FEATURES order
    source_sha256: str = ""  # of the source file's bytes as they were read

    def __len__(self) -> int:
        return len(self.timestamps)


class DuplicateTimestampError(DataError):
    """A timestamp appears twice in one series (the reader may add a data.symbol_column hint)."""


@dataclass
class FileReport:
    """Per-file tallies, logged once per file by `log_to`."""

    unsorted: list[str] = field(default_factory=list)  # series that were not in time order
    nan_cells: dict[str, int] = field(default_factory=dict)
    nan_rows: int = 0
    dropped: int = 0
    clipped: Optional[list[int]] = None  # data.repair=clip: bars swapped, opens and closes clipped

    def add_clipped(self, counts: Optional[tuple[int, int, int]]) -> None:
        if counts is not None:
            self.clipped = [a + b for a, b in zip(self.clipped or [0, 0, 0], counts)]

    def log_to(self, file: str, c: DataConfig, by_symbol: bool) -> None:
        if self.clipped:
            log.warning("%s: data.repair=clip: %d bar(s) with high < low (swapped), %d open and %d close outside "
                        "[low, high] (clipped)", file, *self.clipped)
        if self.unsorted:
            names = ", ".join(self.unsorted[:5]) + (", ..." if len(self.unsorted) > 5 else "")
            which = f" (series {names})" if by_symbol else ""
            log.warning("%s: rows are not in time order%s; sorted them by timestamp", file, which)
        if self.nan_rows:
            cells = ", ".join(f"{k}: {v}" for k, v in self.nan_cells.items() if v)
            action = {"drop": "dropped those rows", "ffill": "forward-filled them"}[c.nan_policy]
            extra = (f"; {self.dropped} leading row(s) with nothing to fill from were dropped"
                     if c.nan_policy == "ffill" and self.dropped else "")
            log.warning("%s: %d row(s) with missing values (%s); nan_policy=%s %s%s",
                        file, self.nan_rows, cells, c.nan_policy, action, extra)


def ffill_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-fill NaNs per column. Returns (filled values, mask of rows still holding a NaN)."""
    nan = np.isnan(values)
    idx = np.where(nan, 0, np.arange(len(values))[:, None])
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = np.take_along_axis(values, idx, axis=0)
    # Rows before a column's first value cannot be filled: they keep the NaN.
    first_valid = np.where(nan.all(axis=0), len(values), np.argmax(~nan, axis=0))
    unfilled = np.arange(len(values))[:, None] < first_valid[None, :]
    filled[unfilled] = np.nan
    return filled, unfilled.any(axis=1)


@dataclass
class _Rows:
    """One series' rows while it is assembled: instants, file lines, UTC offsets, feature columns."""

    ts: np.ndarray  # datetime64[ns] UTC instants: ordering and duplicates
    lines: np.ndarray
    offsets: np.ndarray  # timedelta64[ns]: instant + offset = the wall-clock time the file wrote
    matrix: np.ndarray  # float64 [T, len(names)]
    names: list[str]

    def take(self, keep: np.ndarray) -> None:
        self.ts, self.lines, self.offsets, self.matrix = (a[keep] for a in (self.ts, self.lines, self.offsets, self.matrix))


def _sort(rows: _Rows, name: str, report: FileReport) -> None:
    if len(rows.ts) > 1 and (np.diff(rows.ts) < np.timedelta64(0, "ns")).any():
        rows.take(np.argsort(rows.ts, kind="stable"))
        report.unsorted.append(name)


def _check_duplicates(rows: _Rows, label: str, file: str) -> None:
    if len(rows.ts) < 2:
        return
    dup = np.diff(rows.ts) == np.timedelta64(0, "ns")
    if dup.any():
        j = int(np.argmax(dup))
        stamp = pd.Timestamp(rows.ts[j] + rows.offsets[j])
        raise DuplicateTimestampError(
            f"{label}: duplicate timestamp {stamp} at {line_word(file)}s {rows.lines[j]} and {rows.lines[j + 1]} "
            f"({int(dup.sum())} duplicate(s)); each timestamp may appear once per series"
        )


def _apply_nan_policy(rows: _Rows, name: str, file: str, c: DataConfig, report: FileReport) -> None:
    nan = np.isnan(rows.matrix)
    nan_rows = nan.any(axis=1)
    if not nan_rows.any():
        return
    if c.nan_policy == "error":
        i = int(np.argmax(nan_rows))
        col = rows.names[int(np.argmax(nan[i]))]
        raise DataError(
            f"{where(file, col, rows.lines[i])}: missing value ({int(nan_rows.sum())} row(s) with missing values"
            f"{'' if not name else f' in series {name!r}'}); data.nan_policy=error refuses them, "
            f"use data.nan_policy=ffill or drop"
        )
    for k, col in enumerate(rows.names):
        report.nan_cells[col] = report.nan_cells.get(col, 0) + int(nan[:, k].sum())
    report.nan_rows += int(nan_rows.sum())
    if c.nan_policy == "drop":
        keep = ~nan_rows
    else:  # ffill
        rows.matrix, unfilled = ffill_rows(rows.matrix)
        keep = ~unfilled
    report.dropped += int((~keep).sum())
    rows.take(keep)


def assemble_series(
    name: str,
    file: str,
    ts: np.ndarray,
    feats: dict[str, np.ndarray],
    lines: np.ndarray,
    c: DataConfig,
    report: FileReport,
    offsets: Optional[np.ndarray] = None,
    into: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> Series:
    """Sort, check duplicates, apply the NaN policy and the volume/amount rules to one series.
    ``ts`` are UTC instants (ordering, duplicates); ``offsets`` turn them back into the
    wall-clock times the file wrote (what the series keeps, for the calendar features).
    ``into``: float32 values [>= T, 6] and datetime64[ns] timestamps [>= T] whose first T rows
    the series' arrays become (views), instead of arrays of their own."""
    label = f"{file}" + (f" (series {name!r})" if name else "")
    names = list(feats)
    matrix = np.stack([feats[k] for k in names], axis=1) if names else np.empty((len(ts), 0))
    if offsets is None:
        offsets = np.zeros(len(ts), dtype="timedelta64[ns]")
    rows = _Rows(ts, lines, offsets, matrix, names)
    _sort(rows, name, report)
    _check_duplicates(rows, label, file)
    _apply_nan_policy(rows, name, file, c, report)

    col = {k: rows.matrix[:, i] for i, k in enumerate(names)}
    n = len(rows.ts)
    target = into[0][:n] if into is not None else None
    if target is not None and rows.matrix.dtype == np.float32:
        out = target
    else:
        out = np.empty((n, len(FEATURES)), dtype=rows.matrix.dtype)  # float32 after a chunked read
    for i, k in enumerate(PRICE_COLUMNS):
        out[:, i] = col[k]
    with np.errstate(over="ignore"):  # a value float32 cannot hold: check_magnitude names it
        if "amount" not in col:  # in float64, from the float32 values the series keeps (whichever read gave them)
            col = {k: v.astype(np.float32, copy=False).astype(np.float64) for k, v in col.items()}
        out[:, 4], out[:, 5] = volume_and_amount(col, n)
    check_magnitude(label, out, rows.lines, c, computed_amount="amount" not in col, file=file)
    if target is None:
        return Series(name=name, source=file, timestamps=rows.ts + rows.offsets, values=out.astype(np.float32, copy=False))
    if out is not target:  # a float64 read: its values land in the block now
        target[...] = out
    timestamps = np.add(rows.ts, rows.offsets, out=into[1][:n])
    return Series(name=name, source=file, timestamps=timestamps, values=target)
