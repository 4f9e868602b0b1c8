"""Parquet and Feather/Arrow files -> the frames `collect` checks, through pyarrow.

Columns are found by their names as in a CSV (`columns`). Typed columns skip the text parsing
they do not need: a timestamp type is read as instants (a zone-aware one keeps its wall-clock
time, as zone-aware CSV text does), numbers as numbers; a text column is checked as CSV text is
(the strings pandas reads as missing in a CSV, such as "" and "null", are missing here too).
Messages count rows from 1. A file pyarrow cannot open is one DataError naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .assembly import Series
from . import collect
from .collect import Chunks, Layout, collect_series
from .columns import resolve_columns, symbol_column_hint
from .config import DataConfig, DataError
from .digest import stream_sha256

# What pandas.read_csv reads as missing by default: a text column of a table follows the same rule.
NA_TEXT = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
           "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
def _kind(path: Path) -> str:
    return "Parquet" if path.suffix.lower() == ".parquet" else "Arrow/Feather"


class _Table:
    """A Parquet file read in row groups, or an Arrow IPC (Feather v2) file or stream."""

    def __init__(self, path: Path):
        self.path = path
        if path.suffix.lower() == ".parquet":
            self.parquet: Optional[pq.ParquetFile] = pq.ParquetFile(path)
            self.schema = self.parquet.schema_arrow
        else:
            self.parquet = None
            self.schema = self._ipc().schema

    def _ipc(self):
        try:
            return ipc.open_file(pa.memory_map(str(self.path)))
        except pa.ArrowInvalid:  # not the file format: perhaps the stream format
            return ipc.open_stream(pa.memory_map(str(self.path)))

    def batches(self, columns: list[str], whole: bool) -> Iterator[pa.RecordBatch]:
        if self.parquet is not None:
            if whole:
                yield from self.parquet.read(columns=columns).combine_chunks().to_batches()
                return
            # Whole row groups read faster than batches; the next one is read (pyarrow lets go of the
            # GIL) while this one's rows are checked.
            groups = range(self.parquet.num_row_groups)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet") as pool:
                ahead = [pool.submit(self.parquet.read_row_group, g, columns=columns) for g in groups[:1]]
                for g in groups:
                    group = ahead.pop().result()
                    if g + 1 < len(groups):
                        ahead.append(pool.submit(self.parquet.read_row_group, g + 1, columns=columns))
                    yield from group.to_batches(max_chunksize=collect.CHUNK_ROWS)
                    del group
                    pa.default_memory_pool().release_unused()  # a row group's memory, not kept for the next
            return
        table = self._ipc().read_all().select(columns)
        yield from (table.combine_chunks().to_batches() if whole else table.to_batches(max_chunksize=collect.CHUNK_ROWS))


def _plain(column: pa.ChunkedArray, name: str, file: str) -> pa.ChunkedArray:
    """A column as a type the checks know: numbers, text (with CSV's missing strings null),
    booleans (refused by the checks) or timestamps (dates become midnight)."""
    t = column.type
    if pa.types.is_dictionary(t):
        return _plain(pc.cast(column, t.value_type), name, file)
    if pa.types.is_decimal(t):
        return pc.cast(column, pa.float64())
    if pa.types.is_date(t):
        return pc.cast(pc.cast(column, pa.date32()), pa.timestamp("s"))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.if_else(pc.is_in(column, value_set=pa.array(NA_TEXT, type=t)), pa.scalar(None, t), column)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_timestamp(t) \
            or pa.types.is_time(t) or pa.types.is_null(t):
        return column
    raise DataError(f"{file}: column {name!r} has type {t}; expected numbers, text or timestamps")


def arrow_frame(data: pa.Table | pa.RecordBatch, file: str) -> pd.DataFrame:
    """Arrow columns (of a table file, or of the fast CSV reader) as the frame the checks read."""
    columns = [_plain(data.column(i), name, file) for i, name in enumerate(data.schema.names)]
    return pa.table(columns, names=data.schema.names).to_pandas()


def _chunks(table: _Table, columns: list[str], file: str) -> Chunks:
    def chunks(whole: bool) -> Iterator[pd.DataFrame]:
        try:
            for batch in table.batches(columns, whole):
                yield arrow_frame(batch, file)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{file}: cannot read it as {_kind(table.path)} ({' '.join(str(e).split())})") from None

    return chunks


def read_table(path: Path, file: str, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    """Read and validate one Parquet or Feather/Arrow file: (symbol or None, series) pairs. The
    file's sha256 is computed in a thread while its rows are decoded and checked (hashlib lets go
    of the GIL), so the digest costs no time of its own on a second core."""
    with open(path, "rb") as fh, ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
        digest = pool.submit(stream_sha256, fh)
        try:
            return _read_table(path, file, c, digest)
        finally:
            digest.cancel()


def _read_table(path: Path, file: str, c: DataConfig, digest: Future) -> list[tuple[Optional[str], Series]]:
    try:
        table = _Table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{file}: cannot read it as {_kind(path)} ({' '.join(str(e).split())})") from None
    header = list(table.schema.names)
    cols, symbol_col = resolve_columns(header, c, file)
    used = list(dict.fromkeys(list(cols.values()) + ([symbol_col] if symbol_col else [])))
    others = [h for h in header if h not in used]

    def hint() -> str:
        return symbol_column_hint(next(_chunks(table, others, file)(True)) if others else None)

    layout = Layout(file=file, cols=cols, symbol_col=symbol_col, first_line=1)
    series = collect_series(_chunks(table, used, file), layout, c, "", hint)
    for _, s in series:
        s.source_sha256 = digest.result()
    return series
