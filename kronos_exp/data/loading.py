"""CSV files -> validated series.

Inputs
    `cfg.paths` (a list; entries may be globs) when non-empty, else `cfg.path` (a file, a glob or a
    directory meaning `<dir>/*.csv`), else the bundled sample. Each file is one series, or, with
    `cfg.symbol_column`, one series per symbol value. Series names: the file stem; with a symbol
    column, the symbol when one file is read and `stem:symbol` when several are.

Columns
    Header names are stripped and lower-cased, then `cfg.column_map` renames them (its keys match
    case-insensitively; its values are canonical names: timestamps, open, high, low, close,
    volume, amount). Without config, the timestamp column is the first of timestamps, timestamp,
    datetime, date, time (so Yahoo's `Date`/`Datetime` and the reference `timestamps` need no
    override); a file with separate `date` and `time` columns gets them joined. `vol` is read as
    volume. Other columns are ignored; in particular `Adj Close` is NOT used as close.
    Required: timestamp, open, high, low, close. `volume` missing -> 0. `amount` missing ->
    volume * mean(open, high, low, close), as the published Kronos predictor does. An optional
    column that is entirely empty counts as missing. The separator (`,` `;` tab `|`) is sniffed
    from the header line.

Timestamps
    Text is parsed with `pandas.to_datetime` (format inferred, or `cfg.timestamp_format`); an
    ISO-8601 column may mix dates and date-times. Timestamps with a UTC offset (`...-05:00`,
    `Z`) keep their wall-clock time as written, as the published Kronos code reads them (a New
    York 09:30 bar is hour 9 in winter and in summer); rows are ordered and checked for
    duplicates by the true instant, so a file whose offset changes with DST sorts correctly. Integer columns are read as YYYYMMDD when every value
    has 8 digits, otherwise as Unix epoch time in s/ms/us/ns chosen by magnitude.

Validation (a one-line DataError names file, column, line and value)
    files that are not UTF-8 text (UTF-16/32, binary, other encodings: the byte position), rows
    with more or fewer fields than the header, missing columns, unparseable or empty timestamps,
    timestamps outside pandas' nanosecond range (1677-2262), naive and zone-aware timestamps in
    one column, day/month dates whose order nothing in the file tells (`cfg.dayfirst`),
    duplicate timestamps (within a series), non-numeric text, true/false values and +-inf in
    numeric columns, prices <= 0, negative volume/amount, bars with high < low or open/close
    outside [low, high] (`cfg.repair=clip` clips them, with a warning), values too large for
    float32 windows. Dates such as 13/01/2024 make the file day-first (with a warning). Unsorted input is
    sorted (stable), with one warning per file. Missing numbers ("", "null", "NaN", ...; Yahoo
    writes "null") follow `cfg.nan_policy`: `ffill` (leading gaps that cannot be filled are
    dropped), `drop` the row, or `error`; the count is logged once per file. Blank lines are
    skipped; line numbers count the header as line 1.
"""

from __future__ import annotations

import calendar
import codecs
import csv
import glob
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .config import FEATURES, DataConfig, DataError, validate_config

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
TIMESTAMP = "timestamps"  # canonical name of the timestamp column
TIMESTAMP_CANDIDATES = ("timestamps", "timestamp", "datetime", "date", "time")
ALIASES = {"vol": "volume"}  # applied only when the canonical name is not in the file
_CANONICAL_TARGETS = {TIMESTAMP, *FEATURES} | set(TIMESTAMP_CANDIDATES)


@dataclass
class Series:
    """One time series: rows sorted by time, no missing values."""

    name: str
    source: str  # the file it was read from
    timestamps: np.ndarray  # datetime64[ns], [T], wall-clock time as written, in time order
    values: np.ndarray  # float32, [T, 6] in FEATURES order

    def __len__(self) -> int:
        return len(self.timestamps)


# --------------------------------------------------------------------------- paths


def resolve_paths(cfg: Any) -> list[Path]:
    """The CSV files `cfg` refers to, sorted and de-duplicated.

    Raises DataError "no CSV matches '<pattern>'" when a path or glob matches nothing.
    """
    c = cfg if isinstance(cfg, DataConfig) else validate_config(cfg)
    if c.paths:
        patterns = list(c.paths)
    elif c.path is not None:
        patterns = [c.path]
    else:
        from .sample import sample_path

        return [sample_path()]
    found: set[Path] = set()
    for pattern in patterns:
        expanded = os.path.expanduser(str(pattern))
        if os.path.isdir(expanded):
            matches = glob.glob(os.path.join(expanded, "*.csv"))
        elif glob.has_magic(expanded):
            matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
        else:
            matches = [expanded] if os.path.isfile(expanded) else []
        if not matches:
            where = f" (relative to {os.getcwd()})" if not os.path.isabs(expanded) else ""
            raise DataError(f"no CSV matches {str(pattern)!r}{where}; set data.path to a file, a glob or a directory")
        found.update(Path(m).resolve() for m in matches)
    return sorted(found)


def data_fingerprint_inputs(cfg: Any) -> list[str]:
    """The files `load_series(cfg)` reads, as sorted absolute path strings (for content hashing)."""
    return [str(p) for p in resolve_paths(cfg)]


# --------------------------------------------------------------------------- columns


def _sniff_separator(header_line: str) -> str:
    counts = {sep: header_line.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] > 0 else ","


def _norm(name: Any) -> str:
    return str(name).replace("\ufeff", "").strip().lower()


def _resolve_columns(header: list[str], c: DataConfig, file: str) -> tuple[dict[str, str], Optional[str]]:
    """Map canonical name -> original header name. Also returns the symbol column's original name."""
    column_map = {_norm(k): _norm(v) for k, v in c.column_map.items()}
    for user, canonical in column_map.items():
        if canonical not in _CANONICAL_TARGETS and canonical != _norm(c.symbol_column or ""):
            raise DataError(
                f"data.column_map maps {user!r} to {canonical!r}, which is not a known column; "
                f"map to one of: {', '.join((TIMESTAMP,) + FEATURES)}"
            )
    renamed: dict[str, str] = {}  # name after mapping -> original header name
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

    found = ", ".join(repr(h) for h in header)
    cols: dict[str, str] = {}
    if c.timestamp_column is not None:
        key = column_map.get(_norm(c.timestamp_column), _norm(c.timestamp_column))
        if key not in renamed:
            raise DataError(
                f"{file}: timestamp column {c.timestamp_column!r} (data.timestamp_column) not found; "
                f"columns are {found}"
            )
        cols[TIMESTAMP] = renamed[key]
    elif "date" in renamed and "time" in renamed and not {"timestamps", "timestamp", "datetime"} & set(renamed):
        cols["date"], cols["time"] = renamed["date"], renamed["time"]  # joined later
    else:
        for candidate in TIMESTAMP_CANDIDATES:
            if candidate in renamed:
                cols[TIMESTAMP] = renamed[candidate]
                break

    missing = [name for name in PRICE_COLUMNS if name not in renamed]
    if TIMESTAMP not in cols and "date" not in cols:
        missing.insert(0, "timestamp")
    if missing:
        hint = (
            " (set data.timestamp_column=<name> for the timestamp"
            + ("" if missing == ["timestamp"] else ", data.column_map={<your name>: <canonical>} for the others")
            + ")"
        )
        if header and _norm(header[0]) == "price":
            hint += "; this looks like a yfinance multi-level header: save it with yf.download(..., multi_level_index=False) or df.columns = df.columns.droplevel(1)"
        raise DataError(f"{file}: missing required column(s) {', '.join(missing)}; columns are {found}{hint}")
    for name in FEATURES:
        if name in renamed:
            cols[name] = renamed[name]

    symbol = None
    if c.symbol_column is not None:
        key = _norm(c.symbol_column)
        key = column_map.get(key, key)
        if key not in renamed:
            raise DataError(f"{file}: symbol column {c.symbol_column!r} (data.symbol_column) not found; columns are {found}")
        symbol = renamed[key]
    return cols, symbol


# --------------------------------------------------------------------------- parsing


def _where(file: str, column: str, line: int) -> str:
    return f"{file}: column {column!r}, line {line}"


def _parse_timestamps(raw: pd.Series, c: DataConfig, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    """Parse a timestamp column to naive datetime64[ns] (UTC for zone-aware input)."""
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{_where(file, column, lines[i])}: empty timestamp; every row needs a time")
        if (values == np.round(values)).all() and ((values >= 1e7) & (values < 1e8)).all():
            parsed = pd.to_datetime(raw.astype(np.int64).astype(str), format="%Y%m%d", errors="coerce")
        else:
            magnitude = float(np.median(np.abs(values)))
            unit = "ns" if magnitude >= 1e17 else "us" if magnitude >= 1e14 else "ms" if magnitude >= 1e11 else "s"
            parsed = pd.to_datetime(values, unit=unit, errors="coerce")
        out = pd.DatetimeIndex(parsed)
        _check_range(out, raw, file, column, lines)
    else:
        fmt = c.timestamp_format
        dayfirst = _date_order(raw, c, file, column, lines)
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
    bad = np.asarray(out.isna())
    if bad.any():
        i = int(np.argmax(bad))
        value = raw.iloc[i]
        if pd.isna(value):
            raise DataError(f"{_where(file, column, lines[i])}: empty timestamp; every row needs a time")
        valid = f"the format {c.timestamp_format!r}" if c.timestamp_format else "one consistent format, e.g. 2024-01-02 09:30:00"
        raise DataError(
            f"{_where(file, column, lines[i])}: cannot parse timestamp {str(value)!r} "
            f"({int(bad.sum())} bad value(s)); timestamps must use {valid} (data.timestamp_format sets it)"
        )
    return out.to_numpy().astype("datetime64[ns]")


_UTC_OFFSET = r"(?<=\d)(Z|[+-]\d{2}:?\d{2})$"


def _utc_offsets(raw: pd.Series) -> Optional[np.ndarray]:
    """Each text timestamp's UTC offset as timedelta64[ns] (0 where none is written), or None
    when no row carries one: the wall-clock time as written is the UTC instant plus this."""
    if pd.api.types.is_numeric_dtype(raw):
        return None  # epoch numbers are instants with no wall clock of their own
    found = raw.astype(str).str.strip().str.extract(_UTC_OFFSET, expand=False)
    if found.isna().all():
        return None
    text = found.fillna("Z").str.replace(":", "", regex=False)
    zulu = np.asarray(text == "Z")
    digits = text.where(~zulu, "+0000")
    sign = np.where(digits.str[0] == "-", -1, 1)
    minutes = sign * (digits.str[1:3].astype(int).to_numpy() * 60 + digits.str[3:5].astype(int).to_numpy())
    return (minutes.astype(np.int64) * 60_000_000_000).astype("timedelta64[ns]")


def _parse_numeric(raw: pd.Series, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    _check_not_boolean(raw, file, column, lines)
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(raw, errors="coerce")
        bad = np.asarray(coerced.isna() & raw.notna())
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{_where(file, column, lines[i])}: {str(raw.iloc[i])!r} is not a number "
                f"({int(bad.sum())} such value(s)); use plain numbers, leave missing values empty"
            )
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(values)
    if inf.any():
        i = int(np.argmax(inf))
        raise DataError(
            f"{_where(file, column, lines[i])}: non-finite value {values[i]} ({int(inf.sum())} such value(s)); "
            f"values must be finite numbers (leave missing values empty)"
        )
    return values


# --------------------------------------------------------------------------- checks
# Each check raises a one-line DataError naming file, column and line, so malformed input stops
# before training instead of training on garbage (or on NaN).


def _check_encoding(path: Path, file: str, chunk: int = 1 << 20) -> None:
    """Refuse UTF-16/32, binary and non-UTF-8 files, naming the byte position (0-based) and line."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if head.startswith(bom):
            raise DataError(f"{file}: byte 0: a {name} byte-order mark; save the file as UTF-8")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines = 0, 0  # bytes and line breaks before this chunk
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            nul = block.find(b"\x00")
            if nul >= 0:
                line = newlines + block.count(b"\n", 0, nul) + 1
                raise DataError(
                    f"{file}: byte {offset + nul} (line {line}): a NUL byte; "
                    "this is a binary or UTF-16 file, not CSV text: save it as UTF-8"
                )
            carried = decoder.getstate()[0]  # the start of a character split across chunks
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                seen = carried + block
                line = newlines + seen.count(b"\n", 0, e.start) + 1
                raise DataError(
                    f"{file}: byte {offset - len(carried) + e.start} (line {line}): 0x{seen[e.start]:02x} is not UTF-8; "
                    "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None
            offset += len(block)
            newlines += block.count(b"\n")
    carried = decoder.getstate()[0]
    if carried:
        raise DataError(
            f"{file}: byte {offset - len(carried)} (line {newlines + 1}): 0x{carried[0]:02x} begins a character that "
            "the end of the file cuts off; save the file as UTF-8"
        )


def _check_fields(path: Path, sep: str, file: str) -> None:
    """Every non-blank row has as many fields as the header.

    pandas fills a short row with NaN (which ffill then hides), drops the extra fields of a long
    one, and takes the first column as the index when every row is one field longer.
    """
    ragged: list[tuple[int, int]] = []  # (line, fields)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            expected = len(next(reader))
            start = reader.line_num + 1
            for row in reader:
                if len(row) != expected and any(field.strip() for field in row):
                    ragged.append((start, len(row)))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{file}: line {reader.line_num}: cannot split the line into fields ({e})") from None
    if ragged:
        line, n = ragged[0]
        which = "" if len(ragged) == 1 else ", lines " + ", ".join(str(l) for l, _ in ragged[:5]) + (", ..." if len(ragged) > 5 else "")
        raise DataError(
            f"{file}: line {line} has {n} fields but the header has {expected} ({len(ragged)} such line(s){which}); "
            "every row needs one value per header column (leave missing values empty, not out)"
        )


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
            f"{file}: column {column!r}: line {lines[a]} has a UTC offset or zone ({text.iloc[a]!r}) but line "
            f"{lines[n]} has none ({text.iloc[n]!r}; {int(naive.sum())} of {int(present.sum())} timestamps have none); "
            "give every timestamp an offset, or none"
        )


# Day and month in either order, then the year: 02/01/2024, 2.1.24, 02-01-2024 09:30.
_DMY = r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-](?:\d{4}|\d{2})(?!\d)"


def _date_order(raw: pd.Series, c: DataConfig, file: str, column: str, lines: np.ndarray) -> bool:
    """Whether dates like 02/01/2024 are day-first: `data.dayfirst`, else what the file proves.

    A first number above 12 proves day-first, a second one above 12 month-first; a file with
    neither is ambiguous and one with both mixes orders: both are errors.
    """
    if c.timestamp_format is not None:
        return False
    present = raw.dropna()
    if present.empty or not pd.Series(present.iloc[:1]).astype(str).str.match(_DMY).iloc[0]:
        return False  # year first (ISO): the order is fixed; pandas would apply dayfirst to it as %Y-%d-%m
    parts = raw.astype(str).str.extract(_DMY)
    first, second = pd.to_numeric(parts[0]).to_numpy(), pd.to_numeric(parts[1]).to_numpy()
    day_first = np.flatnonzero((first > 12) & (second <= 12))
    month_first = np.flatnonzero((second > 12) & (first <= 12))
    show = lambda i: str(raw.iloc[i]).strip()  # noqa: E731
    if len(day_first) and len(month_first):
        d, m = int(day_first[0]), int(month_first[0])
        raise DataError(
            f"{file}: column {column!r}: line {lines[d]} has {show(d)!r} (day first) but line {lines[m]} has "
            f"{show(m)!r} (month first); use one date order in the file"
        )
    proven = True if len(day_first) else False if len(month_first) else None
    if c.dayfirst is not None:
        if proven is not None and proven != c.dayfirst:
            i = int((day_first if proven else month_first)[0])
            number = int((first if proven else second)[i])
            order = "day-first" if proven else "month-first"
            raise DataError(
                f"{file}: column {column!r}, line {lines[i]}: {show(i)!r} has no month {number}, so the dates are "
                f"{order}, but data.dayfirst={str(c.dayfirst).lower()}; set data.dayfirst={str(proven).lower()} "
                "(or null to detect it)"
            )
        return c.dayfirst
    if proven is None:
        matched = np.flatnonzero(~np.isnan(first))
        i, last = int(matched[0]), int(matched[-1])
        span = f"line {lines[i]}" if i == last else f"lines {lines[i]}-{lines[last]}"
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


def _check_range(parsed: pd.DatetimeIndex, raw: pd.Series, file: str, column: str, lines: np.ndarray) -> None:
    """Timestamps pandas holds only at a coarser unit than nanoseconds would wrap around when cast."""
    outside = np.asarray((parsed < pd.Timestamp.min) | (parsed > pd.Timestamp.max))
    if outside.any():
        i = int(np.argmax(outside))
        value = raw.iloc[i]
        shown = repr(value) if isinstance(value, str) else str(value)
        raise DataError(
            f"{_where(file, column, lines[i])}: timestamp {shown} is outside the range pandas holds "
            f"({pd.Timestamp.min:%Y-%m-%d} to {pd.Timestamp.max:%Y-%m-%d}; {int(outside.sum())} such value(s))"
        )


def _check_not_boolean(raw: pd.Series, file: str, column: str, lines: np.ndarray) -> None:
    """pandas reads True/False columns as booleans, which numeric conversion turns into 1/0."""
    if pd.api.types.is_bool_dtype(raw):
        is_bool = np.ones(len(raw), dtype=bool)
    elif raw.dtype == object:
        is_bool = np.fromiter((isinstance(v, (bool, np.bool_)) for v in raw), dtype=bool, count=len(raw))
    else:
        return
    if is_bool.any():
        i = int(np.argmax(is_bool))
        raise DataError(
            f"{_where(file, column, lines[i])}: {bool(raw.iloc[i])} is a true/false value, not a number "
            f"({int(is_bool.sum())} such value(s)); map the right column with data.column_map"
        )


def _check_prices(feats: dict[str, np.ndarray], cols: dict[str, str], file: str, lines: np.ndarray) -> None:
    for name in PRICE_COLUMNS:
        bad = feats[name] <= 0  # NaN compares False: missing values follow nan_policy
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{_where(file, cols[name], lines[i])}: price {feats[name][i]:g} is not positive "
                f"({int(bad.sum())} such value(s)); prices must be > 0"
            )


BAR_TOLERANCE = 1e-6  # relative: exported prices that differ by float rounding are consistent


def _check_bars(feats: dict[str, np.ndarray], file: str, lines: np.ndarray, c: DataConfig) -> None:
    """high >= low and open, close inside [low, high]; `data.repair=clip` repairs `feats`."""
    o, h, l, cl = (feats[k] for k in PRICE_COLUMNS)
    tol = BAR_TOLERANCE * np.fmax(np.abs(h), np.abs(l))
    swapped = h < l - tol
    lo, hi = np.fmin(l, h), np.fmax(l, h)  # the bar's range, whichever way round
    outside = {name: (v < lo - tol) | (v > hi + tol) for name, v in (("open", o), ("close", cl))}
    bad = swapped | outside["open"] | outside["close"]
    if not bad.any():
        return
    counts = (
        f"{int(swapped.sum())} with high < low, {int(outside['open'].sum())} open and "
        f"{int(outside['close'].sum())} close outside [low, high]"
    )
    if c.repair == "clip":
        feats["high"], feats["low"] = np.where(swapped, hi, h), np.where(swapped, lo, l)
        for name, v in (("open", o), ("close", cl)):
            feats[name] = np.where(outside[name], np.clip(v, lo, hi), v)
        log.warning("%s: data.repair=clip: %s bar(s) with high < low (swapped), %d open and %d close outside "
                    "[low, high] (clipped)", file, int(swapped.sum()), int(outside["open"].sum()), int(outside["close"].sum()))
        return
    i = int(np.argmax(bad))
    if swapped[i]:
        what = f"high {h[i]:g} is below low {l[i]:g}"
    else:
        name, v = ("open", o) if outside["open"][i] else ("close", cl)
        what = f"{name} {v[i]:g} is outside [low {l[i]:g}, high {h[i]:g}]"
    raise DataError(
        f"{file}: line {lines[i]}: {what} ({int(bad.sum())} bar(s) inconsistent: {counts}); "
        "fix the data or set data.repair=clip to clip them"
    )


def _check_magnitude(where: str, values: np.ndarray, lines: np.ndarray, c: DataConfig, computed_amount: bool) -> None:
    """Values [T, 6] (FEATURES order, float64) that float32 windows hold, and their way back.

    Windows are float32 and a forecast is mapped back as x * std + mean with |x| <= clip and
    std <= 2 * max|value|, so max|value| * (2 * clip + 1) must stay below float32's maximum.
    """
    limit = float(np.finfo(np.float32).max) / (2 * c.clip + 1)
    big = np.abs(values) > limit
    if big.any():
        row, k = (int(v) for v in np.argwhere(big)[0])
        column = repr(FEATURES[k]) + (" (volume x mean price)" if k == 5 and computed_amount else "")
        raise DataError(
            f"{where}: column {column}, line {lines[row]}: value {values[row, k]:g} is too large "
            f"({int(big[:, k].sum())} such value(s)); values must stay below {limit:.3g} in magnitude so that float32 "
            f"windows and their de-normalisation (x * std + mean, |x| <= data.clip={c.clip:g}) stay finite; "
            "rescale the column"
        )
    tiny = float(np.finfo(np.float32).tiny)
    small = (values != 0) & (np.abs(values) < tiny)
    if small.any():
        row, k = (int(v) for v in np.argwhere(small)[0])
        raise DataError(
            f"{where}: column {FEATURES[k]!r}, line {lines[row]}: value {values[row, k]:g} is too small "
            f"({int(small[:, k].sum())} such value(s)); float32 windows hold nonzero values from {tiny:.3g} in magnitude; "
            "rescale the column"
        )


# --------------------------------------------------------------------------- one file


def _ffill_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


class _Report:
    """Per-file tallies, logged once per file."""

    def __init__(self) -> None:
        self.unsorted: list[str] = []
        self.nan_cells: dict[str, int] = {}
        self.nan_rows = 0
        self.dropped = 0


def _finish_group(
    name: str,
    file: str,
    ts: np.ndarray,
    feats: dict[str, np.ndarray],
    lines: np.ndarray,
    c: DataConfig,
    report: _Report,
    offsets: Optional[np.ndarray] = None,
) -> Series:
    """Sort, check duplicates, apply the NaN policy and the volume/amount rules to one series.
    ``ts`` are UTC instants (ordering, duplicates); ``offsets`` turn them back into the
    wall-clock times the file wrote (what the series keeps, for the calendar features)."""
    where = f"{file}" + (f" (series {name!r})" if name else "")
    if offsets is None:
        offsets = np.zeros(len(ts), dtype="timedelta64[ns]")
    if len(ts) > 1 and (np.diff(ts) < np.timedelta64(0, "ns")).any():
        order = np.argsort(ts, kind="stable")
        ts, lines, offsets = ts[order], lines[order], offsets[order]
        feats = {k: v[order] for k, v in feats.items()}
        report.unsorted.append(name)
    if len(ts) > 1:
        dup = np.diff(ts) == np.timedelta64(0, "ns")
        if dup.any():
            j = int(np.argmax(dup))
            stamp = pd.Timestamp(ts[j] + offsets[j])
            raise DataError(
                f"{where}: duplicate timestamp {stamp} at lines {lines[j]} and {lines[j + 1]} "
                f"({int(dup.sum())} duplicate(s)); each timestamp may appear once per series"
            )

    names = list(feats)
    matrix = np.stack([feats[k] for k in names], axis=1) if names else np.empty((len(ts), 0))
    nan = np.isnan(matrix)
    nan_rows = nan.any(axis=1)
    if nan_rows.any():
        if c.nan_policy == "error":
            i = int(np.argmax(nan_rows))
            col = names[int(np.argmax(nan[i]))]
            raise DataError(
                f"{_where(file, col, lines[i])}: missing value ({int(nan_rows.sum())} row(s) with missing values"
                f"{'' if not name else f' in series {name!r}'}); data.nan_policy=error refuses them, "
                f"use data.nan_policy=ffill or drop"
            )
        for k, col in enumerate(names):
            report.nan_cells[col] = report.nan_cells.get(col, 0) + int(nan[:, k].sum())
        report.nan_rows += int(nan_rows.sum())
        if c.nan_policy == "drop":
            keep = ~nan_rows
        else:  # ffill
            matrix, unfilled = _ffill_rows(matrix)
            keep = ~unfilled
        report.dropped += int((~keep).sum())
        ts, matrix, lines, offsets = ts[keep], matrix[keep], lines[keep], offsets[keep]

    col = {k: matrix[:, i] for i, k in enumerate(names)}
    n = len(ts)
    out = np.empty((n, len(FEATURES)), dtype=np.float64)
    for i, k in enumerate(PRICE_COLUMNS):
        out[:, i] = col[k]
    volume = col.get("volume", np.zeros(n))
    out[:, 4] = volume
    if "amount" in col:
        out[:, 5] = col["amount"]
    else:
        out[:, 5] = volume * (col["open"] + col["high"] + col["low"] + col["close"]) / 4.0
    _check_magnitude(where, out, lines, c, computed_amount="amount" not in col)
    return Series(name=name, source=file, timestamps=ts + offsets, values=out.astype(np.float32))


def _read_csv(path: Path, file: str, **kwargs: Any) -> pd.DataFrame:
    """pd.read_csv of a file the checks above passed; what pandas still refuses becomes a DataError."""
    try:
        return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        reason = " ".join(str(e).split())
        raise DataError(f"{file}: cannot read it as CSV ({reason})") from None


def _symbol_column_hint(path: Path, sep: str, header: list[str], used: set[str]) -> str:
    """For duplicate timestamps in a file read as one series: the columns of repeated text that
    look like a symbol, named with the data.symbol_column setting that splits the file by them."""
    others = [h for h in header if h not in used]
    candidates = []
    if others:
        df = _read_csv(path, str(path), sep=sep, usecols=others, dtype=str)
        for name in others:
            values = df[name].dropna().str.strip()
            numeric = pd.to_numeric(values, errors="coerce").notna().all()
            if len(values) and not numeric and values.nunique() < len(values):
                candidates.append(name)
    if not candidates:
        return "; if the file holds several series, name the column that tells them apart with data.symbol_column"
    return (f"; the file looks like several series in one: set data.symbol_column="
            f"{candidates[0]} (columns of repeated text: {', '.join(candidates)})")


def _read_file(path: Path, c: DataConfig) -> list[tuple[Optional[str], Series]]:
    """Read and validate one CSV. Returns (symbol or None, series) pairs; names are set later."""
    file = str(path)
    _check_encoding(path, file)
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header_line = fh.readline()
    if not header_line.strip():
        raise DataError(f"{file}: the file is empty; expected a header line such as timestamps,open,high,low,close")
    sep = _sniff_separator(header_line)
    header = list(_read_csv(path, file, sep=sep, nrows=0).columns)
    cols, symbol_col = _resolve_columns(header, c, file)
    _check_fields(path, sep, file)

    usecols = list(dict.fromkeys(list(cols.values()) + ([symbol_col] if symbol_col else [])))
    text_cols = {k: str for k in (symbol_col, cols.get(TIMESTAMP), cols.get("date"), cols.get("time")) if k}
    # Text columns are read as text (keeps leading zeros of symbols); numeric timestamps are
    # re-read as numbers below only when every value is numeric.
    df = _read_csv(path, file, sep=sep, usecols=usecols, dtype=text_cols, skip_blank_lines=False)
    lines = np.arange(len(df), dtype=np.int64) + 2  # header is line 1
    blank = np.asarray(df.isna().all(axis=1))
    if blank.any():
        df, lines = df.loc[~blank].reset_index(drop=True), lines[~blank]
    if len(df) == 0:
        raise DataError(f"{file}: no data rows after the header")

    if "date" in cols:  # separate date and time columns
        date, time = df[cols["date"]], df[cols["time"]]
        for column, part in ((cols["date"], date), (cols["time"], time)):
            if part.isna().any():
                i = int(np.argmax(np.asarray(part.isna())))
                raise DataError(f"{_where(file, column, lines[i])}: empty timestamp; every row needs a time")
        raw_ts, ts_name = date.astype(str) + " " + time.astype(str), f"{cols['date']}+{cols['time']}"
    else:
        raw_ts, ts_name = df[cols[TIMESTAMP]], cols[TIMESTAMP]
        first = str(raw_ts.iloc[0]).strip()
        if first.lstrip("-").replace(".", "", 1).isdigit():  # epoch or YYYYMMDD numbers?
            numeric = pd.to_numeric(raw_ts, errors="coerce")
            if raw_ts.notna().all() and numeric.notna().all():
                raw_ts = numeric
    ts = _parse_timestamps(raw_ts, c, file, ts_name, lines)
    offsets = _utc_offsets(raw_ts)

    feats: dict[str, np.ndarray] = {}
    for name in FEATURES:
        if name in cols:
            values = _parse_numeric(df[cols[name]], file, cols[name], lines)
            if name in ("volume", "amount") and np.isnan(values).all():
                log.info("%s: column %r is empty; treated as missing", file, cols[name])
                continue
            if name in ("volume", "amount"):
                neg = values < 0
                if neg.any():
                    i = int(np.argmax(neg))
                    raise DataError(
                        f"{_where(file, cols[name], lines[i])}: negative {name} {values[i]:g} "
                        f"({int(neg.sum())} negative value(s)); {name} must be >= 0"
                    )
            feats[name] = values
    _check_prices(feats, cols, file, lines)
    _check_bars(feats, file, lines, c)

    report = _Report()
    out: list[tuple[Optional[str], Series]] = []
    if symbol_col is None:
        try:
            out.append((None, _finish_group("", file, ts, feats, lines, c, report, offsets)))
        except DataError as err:
            if "duplicate timestamp" not in str(err):
                raise
            raise DataError(f"{err}{_symbol_column_hint(path, sep, header, set(cols.values()))}") from None
    else:
        sym = df[symbol_col]
        if sym.isna().any():
            i = int(np.argmax(np.asarray(sym.isna())))
            raise DataError(f"{_where(file, symbol_col, lines[i])}: empty symbol; every row needs one")
        codes, uniques = pd.factorize(sym.astype(str).str.strip(), sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniques)))])
        for k, symbol in enumerate(uniques):
            rows = order[bounds[k] : bounds[k + 1]]
            group = {name: v[rows] for name, v in feats.items()}
            series = _finish_group(str(symbol), file, ts[rows], group, lines[rows], c, report,
                                   None if offsets is None else offsets[rows])
            out.append((str(symbol), series))

    if report.unsorted:
        which = "" if symbol_col is None else f" (series {', '.join(report.unsorted[:5])}{', ...' if len(report.unsorted) > 5 else ''})"
        log.warning("%s: rows are not in time order%s; sorted them by timestamp", file, which)
    if report.nan_rows:
        cells = ", ".join(f"{k}: {v}" for k, v in report.nan_cells.items() if v)
        action = {"drop": "dropped those rows", "ffill": "forward-filled them"}[c.nan_policy]
        extra = f"; {report.dropped} leading row(s) with nothing to fill from were dropped" if c.nan_policy == "ffill" and report.dropped else ""
        log.warning("%s: %d row(s) with missing values (%s); nan_policy=%s %s%s", file, report.nan_rows, cells, c.nan_policy, action, extra)
    return out


# --------------------------------------------------------------------------- public


def load_series(cfg: Any) -> list[Series]:
    """Read every file `cfg` refers to and return its validated series (file order, then symbol order)."""
    c = validate_config(cfg)
    paths = resolve_paths(c)
    per_file = [(path, _read_file(path, c)) for path in paths]
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):  # same stem in different folders: name by relative path
        root = os.path.commonpath([str(p.parent) for p in paths])
        stems = [str(Path(os.path.relpath(p, root)).with_suffix("")) for p in paths]
    series: list[Series] = []
    for stem, (_, items) in zip(stems, per_file):
        for symbol, s in items:
            if symbol is None:
                s.name = stem
            else:
                s.name = symbol if len(paths) == 1 else f"{stem}:{symbol}"
            series.append(s)
    return series
