"""Timestamp columns -> instants and wall-clock times, with the checks that belong to them.

Text is parsed with `pandas.to_datetime` (format inferred, or `data.timestamp_format`); an
ISO-8601 column may mix dates and date-times. Timestamps with a UTC offset (`...-05:00`, `Z`)
keep their wall-clock time as written, as the published Kronos code reads them (a New York 09:30
bar is hour 9 in winter and in summer); rows are ordered and checked for duplicates by the true
instant, so a file whose offset changes with DST sorts correctly. Integer columns are read as
YYYYMMDD when every value has 8 digits, otherwise as Unix epoch time in s/ms/us/ns chosen by
magnitude. Dates such as 13/01/2024 make the file day-first (with a warning); dates no day above
12 tells, naive and zone-aware timestamps in one column, and timestamps outside pandas'
nanosecond range (1677-2262) are errors.
"""

from __future__ import annotations

import calendar
import logging
import warnings
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.tseries.api import guess_datetime_format

from .checks import line_word, where
from .config import DataConfig, DataError
from .frame import TIMESTAMP

log = logging.getLogger(__name__)


def raw_timestamps(df: pd.DataFrame, cols: dict[str, str], file: str, lines: np.ndarray) -> tuple[pd.Series, str]:
    """The timestamp column as read (text, or numbers when every value is one), and its name;
    separate date and time columns are joined as "date time"."""
    if "date" in cols:
        date, time = df[cols["date"]], df[cols["time"]]
        for column, part in ((cols["date"], date), (cols["time"], time)):
            if part.isna().any():
                i = int(np.argmax(np.asarray(part.isna())))
                raise DataError(f"{where(file, column, lines[i])}: empty timestamp; every row needs a time")
        return date.astype(str) + " " + time.astype(str), f"{cols['date']}+{cols['time']}"
    raw = df[cols[TIMESTAMP]]
    first = str(raw.iloc[0]).strip()
    if first.lstrip("-").replace(".", "", 1).isdigit():  # epoch or YYYYMMDD numbers?
        numeric = pd.to_numeric(raw, errors="coerce")
        if raw.notna().all() and numeric.notna().all():
            return numeric, cols[TIMESTAMP]
    return raw, cols[TIMESTAMP]


def parse_timestamps(raw: pd.Series, c: DataConfig, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    """Parse a timestamp column to naive datetime64[ns] (UTC for zone-aware input)."""
    if _is_datetime(raw):
        out = pd.DatetimeIndex(raw)
        if out.tz is not None:
            out = out.tz_convert("UTC").tz_localize(None)
        _check_range(out, raw, file, column, lines)
    elif pd.api.types.is_numeric_dtype(raw):
        out = _parse_numbers(raw, file, column, lines)
    else:
        out = _parse_text(raw, c, file, column, lines)
    bad = np.asarray(out.isna())
    if bad.any():
        i = int(np.argmax(bad))
        value = raw.iloc[i]
        if pd.isna(value):
            raise DataError(f"{where(file, column, lines[i])}: empty timestamp; every row needs a time")
        valid = f"the format {c.timestamp_format!r}" if c.timestamp_format else "one consistent format, e.g. 2024-01-02 09:30:00"
        raise DataError(
            f"{where(file, column, lines[i])}: cannot parse timestamp {str(value)!r} "
            f"({int(bad.sum())} bad value(s)); timestamps must use {valid} (data.timestamp_format sets it)"
        )
    return out.to_numpy().astype("datetime64[ns]")


def _parse_numbers(raw: pd.Series, file: str, column: str, lines: np.ndarray) -> pd.DatetimeIndex:
    """YYYYMMDD when every value is an 8-digit integer, else epoch time in a unit chosen by magnitude."""
    values = raw.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where(file, column, lines[i])}: empty timestamp; every row needs a time")
    unit = _number_unit(values)
    if unit == "YYYYMMDD":
        parsed = pd.to_datetime(raw.astype(np.int64).astype(str), format="%Y%m%d", errors="coerce")
    else:
        parsed = pd.to_datetime(values, unit=unit, errors="coerce")
    out = pd.DatetimeIndex(parsed)
    _check_range(out, raw, file, column, lines)
    return out


def _number_unit(values: np.ndarray) -> str:
    """YYYYMMDD when every value is an 8-digit integer, else the epoch unit their median suggests."""
    if (values == np.round(values)).all() and ((values >= 1e7) & (values < 1e8)).all():
        return "YYYYMMDD"
    magnitude = float(np.median(np.abs(values)))
    return "ns" if magnitude >= 1e17 else "us" if magnitude >= 1e14 else "ms" if magnitude >= 1e11 else "s"


def _is_datetime(raw: pd.Series) -> bool:
    """A typed timestamp column (Parquet/Arrow), naive or zone-aware: no text to parse."""
    return isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw)


def timestamp_kind(raw: pd.Series, c: DataConfig) -> tuple:
    """What decides how a timestamp column is read: its type, the unit of numbers, the format
    pandas infers from the first text value. Chunks of one file read alike when their kinds match."""
    if _is_datetime(raw):
        return ("datetime", str(raw.dtype))
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        return ("number", _number_unit(values) if np.isfinite(values).all() else None)
    present = raw.dropna()
    first = str(present.iloc[0]) if len(present) else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Parsing dates in %d/%m/%Y format when dayfirst=False"
        return ("text", c.timestamp_format or guess_datetime_format(first, dayfirst=bool(c.dayfirst)))


def _parse_text(raw: pd.Series, c: DataConfig, file: str, column: str, lines: np.ndarray) -> pd.DatetimeIndex:
    """Text in one format (inferred or `data.timestamp_format`); zone-aware text as UTC instants."""
    fmt = c.timestamp_format
    dayfirst = date_order(raw, c, file, column, lines)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": our own error says more
        try:
            # utc=True: zone-aware text is converted to UTC, naive text is taken as it is.
            out = pd.DatetimeIndex(
                pd.to_datetime(raw, errors="coerce", utc=True, format=fmt, dayfirst=dayfirst)
            ).tz_localize(None)
        except (ValueError, TypeError) as e:  # e.g. a format string that does not parse
            raise DataError(f"{file}: column {column!r}: cannot parse timestamps ({e})") from None
        _check_range(out, raw, file, column, lines)
        bad = np.asarray(out.isna()) & np.asarray(raw.notna())
        if bad.any() or fmt in ("ISO8601", "mixed"):  # one inferred format never mixes naive and aware
            _check_zones(raw, file, column, lines)
        if bad.any() and fmt is None:  # an ISO-8601 column may mix dates and date-times
            retry = pd.DatetimeIndex(pd.to_datetime(raw[bad], errors="coerce", utc=True, format="ISO8601"))
            if not retry.isna().any():
                _check_range(retry.tz_localize(None), raw[bad], file, column, lines[bad])
                merged = out.to_numpy().astype("datetime64[ns]")
                merged[bad] = retry.tz_localize(None).to_numpy()
                out = pd.DatetimeIndex(merged)
    return out


_UTC_OFFSET = r"\d(?P<zone>Z|[+-]\d{2}:?\d{2})$"  # after a digit, at the end (RE2: no look-behind)


def _arrow_text(raw: pd.Series) -> Any:
    """A column as Arrow strings (missing values null), for pyarrow's vectorised regex: an Array
    or a ChunkedArray (pandas' own text columns are Arrow arrays already)."""
    return pa.array(raw.astype(str), from_pandas=True, type=pa.large_string())


def _groups(raw: pd.Series, pattern: str, names: tuple[str, ...]) -> list[Any]:
    """The named groups of `pattern` in each stripped value (null where it does not match)."""
    found = pc.extract_regex(pc.utf8_trim_whitespace(_arrow_text(raw)), pattern)
    return [pc.struct_field(found, name) for name in names]


def utc_offsets(raw: pd.Series) -> Optional[np.ndarray]:
    """Each timestamp's UTC offset as timedelta64[ns] (0 where none is written), or None when no
    row carries one: the wall-clock time as written is the UTC instant plus this."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        index = pd.DatetimeIndex(raw)
        return (index.tz_localize(None) - index.tz_convert("UTC").tz_localize(None)).to_numpy().astype("timedelta64[ns]")
    if pd.api.types.is_numeric_dtype(raw) or _is_datetime(raw):
        return None  # epoch numbers and naive types are instants with no written offset
    (zone,) = _groups(raw, _UTC_OFFSET, ("zone",))
    if zone.null_count == len(zone):
        return None
    text = pc.replace_substring(pc.fill_null(zone, "Z"), ":", "")
    digits = pc.if_else(pc.equal(text, "Z"), "+0000", text)
    sign = np.where(pc.equal(pc.utf8_slice_codeunits(digits, 0, 1), "-").to_numpy(zero_copy_only=False), -1, 1)
    hours, mins = (pc.cast(pc.utf8_slice_codeunits(digits, a, a + 2), pa.int64()).to_numpy(zero_copy_only=False)
                   for a in (1, 3))
    minutes = sign * (hours * 60 + mins)
    return (minutes.astype(np.int64) * 60_000_000_000).astype("timedelta64[ns]")


# A time of day followed by a UTC offset or zone: 09:30Z, 09:30:00+01:00, 09:30 UTC, 09:30:00.5-0500.
_ZONE = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"


def _check_zones(raw: pd.Series, file: str, column: str, lines: np.ndarray) -> None:
    """Zone-aware and naive timestamps in one column: the naive ones have no defined instant."""
    present = np.asarray(raw.notna())
    text = raw.astype(str).str.strip()
    aware = np.asarray(text.str.contains(_ZONE, case=False, regex=True, na=False)) & present
    naive = present & ~aware
    if aware.any() and naive.any():
        a, n = int(np.argmax(aware)), int(np.argmax(naive))
        raise DataError(
            f"{file}: column {column!r}: {line_word(file)} {lines[a]} has a UTC offset or zone ({text.iloc[a]!r}) but {line_word(file)} "
            f"{lines[n]} has none ({text.iloc[n]!r}; {int(naive.sum())} of {int(present.sum())} timestamps have none); "
            "give every timestamp an offset, or none"
        )


def _check_range(parsed: pd.DatetimeIndex, raw: pd.Series, file: str, column: str, lines: np.ndarray) -> None:
    """Timestamps pandas holds only at a coarser unit than nanoseconds would wrap around when cast
    (compared as integers in their own unit: the nanosecond bounds rounded inwards)."""
    per = int(np.timedelta64(1, parsed.unit) // np.timedelta64(1, "ns"))
    ticks = parsed.asi8
    low, high = -(-pd.Timestamp.min.value // per), pd.Timestamp.max.value // per
    outside = ((ticks < low) | (ticks > high)) & (ticks != np.iinfo(np.int64).min)  # NaT is no timestamp
    if outside.any():
        i = int(np.argmax(outside))
        value = raw.iloc[i]
        shown = repr(value) if isinstance(value, str) else str(value)
        raise DataError(
            f"{where(file, column, lines[i])}: timestamp {shown} is outside the range pandas holds "
            f"({pd.Timestamp.min:%Y-%m-%d} to {pd.Timestamp.max:%Y-%m-%d}; {int(outside.sum())} such value(s))"
        )


# Day and month in either order, then the year: 02/01/2024, 2.1.24, 02-01-2024 09:30.
_DMY = r"^\s*(?P<first>\d{1,2})[/.\-](?P<second>\d{1,2})[/.\-](?:\d{4}|\d{2})(?:\D|$)"


def date_order(raw: pd.Series, c: DataConfig, file: str, column: str, lines: np.ndarray) -> bool:
    """Whether dates like 02/01/2024 are day-first: `data.dayfirst`, else what the file proves.

    A first number above 12 proves day-first, a second one above 12 month-first; a file with
    neither is ambiguous and one with both mixes orders: both are errors.
    """
    if c.timestamp_format is not None:
        return False
    present = raw.dropna()
    if present.empty or not pd.Series(present.iloc[:1]).astype(str).str.match(_DMY).iloc[0]:
        return False  # year first (ISO): the order is fixed; pandas would apply dayfirst to it as %Y-%d-%m
    first, second = (pc.cast(part, pa.float64()).to_numpy(zero_copy_only=False)
                     for part in _groups(raw, _DMY, ("first", "second")))
    day_first = np.flatnonzero((first > 12) & (second <= 12))
    month_first = np.flatnonzero((second > 12) & (first <= 12))
    show = lambda i: str(raw.iloc[i]).strip()  # noqa: E731
    if len(day_first) and len(month_first):
        d, m = int(day_first[0]), int(month_first[0])
        raise DataError(
            f"{file}: column {column!r}: {line_word(file)} {lines[d]} has {show(d)!r} (day first) but {line_word(file)} {lines[m]} has "
            f"{show(m)!r} (month first); use one date order in the file"
        )
    proven = True if len(day_first) else False if len(month_first) else None
    if c.dayfirst is not None:
        if proven is not None and proven != c.dayfirst:
            i = int((day_first if proven else month_first)[0])
            number = int((first if proven else second)[i])
            order = "day-first" if proven else "month-first"
            raise DataError(
                f"{file}: column {column!r}, {line_word(file)} {lines[i]}: {show(i)!r} has no month {number}, so the dates are "
                f"{order}, but data.dayfirst={str(c.dayfirst).lower()}; set data.dayfirst={str(proven).lower()} "
                "(or null to detect it)"
            )
        return c.dayfirst
    if proven is None:
        matched = np.flatnonzero(~np.isnan(first))
        i, last = int(matched[0]), int(matched[-1])
        word = line_word(file)
        span = f"{word} {lines[i]}" if i == last else f"{word}s {lines[i]}-{lines[last]}"
        a, b = int(first[i]), int(second[i])
        raise DataError(
            f"{file}: column {column!r}, {span}: dates such as {show(i)!r} read as day/month or month/day "
            f"(no day above 12 tells which); set data.dayfirst=true ({a} {calendar.month_name[b]}) or "
            f"data.dayfirst=false ({b} {calendar.month_name[a]}), or data.timestamp_format"
        )
    if proven:
        i = int(day_first[0])
        log.warning(
            "%s: column %r: read dates as day-first: line %d has %r (no month %d); set data.dayfirst=true to say so",
            file, column, lines[i], show(i), int(first[i]),
        )
    return proven
