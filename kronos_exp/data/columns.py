"""Which header column is which: the separator, `data.column_map`, and the detection of the
timestamp, price, volume/amount and symbol columns.

Header names are stripped and lower-cased, then `data.column_map` renames them (its keys match
case-insensitively; its values are canonical names: timestamps, open, high, low, close, volume,
amount). Without config, the timestamp column is the first of timestamps, timestamp, datetime,
date, time (so Yahoo's `Date`/`Datetime` and the reference `timestamps` need no override); a file
with separate `date` and `time` columns gets them joined. `vol` is read as volume. Other columns
are ignored; in particular `Adj Close` is NOT used as close.
"""

from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from .config import DataConfig, DataError
from .frame import FEATURES, PRICE_COLUMNS, TIMESTAMP

TIMESTAMP_CANDIDATES = ("timestamps", "timestamp", "datetime", "date", "time")
ALIASES = {"vol": "volume"}  # applied only when the canonical name is not in the file
_CANONICAL_TARGETS = {TIMESTAMP, *FEATURES} | set(TIMESTAMP_CANDIDATES)
SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(header_line: str) -> str:
    """The separator the header line uses most (a comma when it uses none)."""
    counts = {sep: header_line.count(sep) for sep in SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > 0 else ","


def _norm(name: Any) -> str:
    return str(name).replace("\ufeff", "").strip().lower()


def _column_map(c: DataConfig) -> dict[str, str]:
    """`data.column_map` with normalized names; a target that is no known column is an error."""
    column_map = {_norm(k): _norm(v) for k, v in c.column_map.items()}
    for user, canonical in column_map.items():
        if canonical not in _CANONICAL_TARGETS and canonical != _norm(c.symbol_column or ""):
            raise DataError(
                f"data.column_map maps {user!r} to {canonical!r}, which is not a known column; "
                f"map to one of: {', '.join((TIMESTAMP,) + FEATURES)}"
            )
    return column_map


def _renamed(header: list[str], column_map: dict[str, str], file: str) -> dict[str, str]:
    """Name after mapping -> original header name; two columns may not end up with one name."""
    renamed: dict[str, str] = {}
    for original in header:
        name = _norm(original)
        name = column_map.get(name, name)
        if name in renamed:
            raise DataError(
                f"{file}: columns {renamed[name]!r} and {original!r} both give column {name!r}; "
                f"rename one (data.column_map) or remove it"
            )
        renamed[name] = original
    for alias, canonical in ALIASES.items():
        if alias in renamed and canonical not in renamed:
            renamed[canonical] = renamed.pop(alias)
    return renamed


def _timestamp_columns(renamed: dict[str, str], column_map: dict[str, str], c: DataConfig, file: str,
                       found: str) -> dict[str, str]:
    """{TIMESTAMP: name}, {"date": name, "time": name} (joined later), or {} when none is found."""
    if c.timestamp_column is not None:
        key = column_map.get(_norm(c.timestamp_column), _norm(c.timestamp_column))
        if key not in renamed:
            raise DataError(
                f"{file}: timestamp column {c.timestamp_column!r} (data.timestamp_column) not found; "
                f"columns are {found}"
            )
        return {TIMESTAMP: renamed[key]}
    if "date" in renamed and "time" in renamed and not {"timestamps", "timestamp", "datetime"} & set(renamed):
        return {"date": renamed["date"], "time": renamed["time"]}
    for candidate in TIMESTAMP_CANDIDATES:
        if candidate in renamed:
            return {TIMESTAMP: renamed[candidate]}
    return {}


def _check_required(header: list[str], renamed: dict[str, str], cols: dict[str, str], file: str, found: str) -> None:
    missing = [name for name in PRICE_COLUMNS if name not in renamed]
    if not cols:
        missing.insert(0, "timestamp")
    if not missing:
        return
    hint = (
        " (set data.timestamp_column=<name> for the timestamp"
        + ("" if missing == ["timestamp"] else ", data.column_map={<your name>: <canonical>} for the others")
        + ")"
    )
    if header and _norm(header[0]) == "price":
        hint += "; this looks like a yfinance multi-level header: save it with yf.download(..., multi_level_index=False) or df.columns = df.columns.droplevel(1)"
    raise DataError(f"{file}: missing required column(s) {', '.join(missing)}; columns are {found}{hint}")


def resolve_columns(header: list[str], c: DataConfig, file: str) -> tuple[dict[str, str], Optional[str]]:
    """Map canonical name -> original header name. Also returns the symbol column's original name."""
    column_map = _column_map(c)
    renamed = _renamed(header, column_map, file)
    found = ", ".join(repr(h) for h in header)
    cols = _timestamp_columns(renamed, column_map, c, file, found)
    _check_required(header, renamed, cols, file, found)
    for name in FEATURES:
        if name in renamed:
            cols[name] = renamed[name]
    if c.symbol_column is None:
        return cols, None
    key = _norm(c.symbol_column)
    key = column_map.get(key, key)
    if key not in renamed:
        raise DataError(f"{file}: symbol column {c.symbol_column!r} (data.symbol_column) not found; columns are {found}")
    return cols, renamed[key]


def symbol_column_hint(others: Optional[pd.DataFrame]) -> str:
    """For duplicate timestamps in a file read as one series: the file's other columns of
    repeated text, which look like a symbol, named with the data.symbol_column setting that
    splits the file by them."""
    candidates = []
    for name in [] if others is None else others.columns:
        values = others[name].dropna().astype(str).str.strip()
        numeric = pd.to_numeric(values, errors="coerce").notna().all()
        if len(values) and not numeric and values.nunique() < len(values):
            candidates.append(name)
    if not candidates:
        return "; if the file holds several series, name the column that tells them apart with data.symbol_column"
    return (f"; the file looks like several series in one: set data.symbol_column="
            f"{candidates[0]} (columns of repeated text: {', '.join(candidates)})")
