"""The checks that stop malformed input before training instead of training on garbage (or NaN).

Each raises a one-line DataError naming file, column and line (line numbers count the header as
line 1; Parquet/Arrow tables: row, the first row is row 1) and what would be valid: non-numeric text,
true/false values and +-inf in numeric columns, prices <= 0, negative volume/amount, bars with
high < low or open/close outside [low, high] (`data.repair=clip` clips them, with a warning), and
values too large or too small for float32 windows. Timestamp checks live in `timestamps`, the
checks of a CSV's bytes (encoding, fields per line) in `csv_scan`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from .config import DataConfig, DataError
from .frame import FEATURES, PRICE_COLUMNS

BAR_TOLERANCE = 1e-6  # relative: exported prices that differ by float rounding are consistent


TABLE_SUFFIXES = (".parquet", ".feather", ".arrow")  # files read through pyarrow


def line_word(file: str) -> str:
    """What messages count: lines of a CSV (the header is line 1), rows of a Parquet/Arrow table
    (the first row is row 1)."""
    return "row" if file.lower().endswith(TABLE_SUFFIXES) else "line"


def where(file: str, column: str, line: int) -> str:
    """The start of an error message about one cell."""
    return f"{file}: column {column!r}, {line_word(file)} {line}"


def parse_numeric(raw: pd.Series, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    """A numeric column as float64 (NaN where empty); text, true/false and +-inf are errors."""
    _check_not_boolean(raw, file, column, lines)
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(raw, errors="coerce")
        bad = np.asarray(coerced.isna() & raw.notna())
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where(file, column, lines[i])}: {str(raw.iloc[i])!r} is not a number "
                f"({int(bad.sum())} such value(s)); use plain numbers, leave missing values empty"
            )
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(values)
    if inf.any():
        i = int(np.argmax(inf))
        raise DataError(
            f"{where(file, column, lines[i])}: non-finite value {values[i]} ({int(inf.sum())} such value(s)); "
            f"values must be finite numbers (leave missing values empty)"
        )
    return values


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
            f"{where(file, column, lines[i])}: {bool(raw.iloc[i])} is a true/false value, not a number "
            f"({int(is_bool.sum())} such value(s)); map the right column with data.column_map"
        )


def check_not_negative(values: np.ndarray, name: str, file: str, column: str, lines: np.ndarray) -> None:
    """Volume and amount are counts and sums: >= 0."""
    neg = values < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise DataError(
            f"{where(file, column, lines[i])}: negative {name} {values[i]:g} "
            f"({int(neg.sum())} negative value(s)); {name} must be >= 0"
        )


def check_prices(feats: dict[str, np.ndarray], cols: dict[str, str], file: str, lines: np.ndarray) -> None:
    """Prices > 0 (missing ones are left to data.nan_policy)."""
    for name in PRICE_COLUMNS:
        bad = feats[name] <= 0  # NaN compares False: missing values follow nan_policy
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where(file, cols[name], lines[i])}: price {feats[name][i]:g} is not positive "
                f"({int(bad.sum())} such value(s)); prices must be > 0"
            )


def check_bars(feats: dict[str, np.ndarray], file: str, lines: np.ndarray, c: DataConfig) -> Optional[tuple[int, int, int]]:
    """high >= low and open, close inside [low, high]; `data.repair=clip` repairs `feats` and
    returns the counts it repaired (bars swapped, opens and closes clipped) for one warning per file."""
    o, h, l, cl = (feats[k] for k in PRICE_COLUMNS)
    if ((l <= h) & (l <= o) & (o <= h) & (l <= cl) & (cl <= h)).all():
        return None  # every bar holds without the tolerance (the common case: fewer passes over the rows)
    tol = BAR_TOLERANCE * np.fmax(np.abs(h), np.abs(l))
    swapped = h < l - tol
    lo, hi = np.fmin(l, h), np.fmax(l, h)  # the bar's range, whichever way round
    outside = {name: (v < lo - tol) | (v > hi + tol) for name, v in (("open", o), ("close", cl))}
    bad = swapped | outside["open"] | outside["close"]
    if not bad.any():
        return None
    counts = (
        f"{int(swapped.sum())} with high < low, {int(outside['open'].sum())} open and "
        f"{int(outside['close'].sum())} close outside [low, high]"
    )
    if c.repair == "clip":
        feats["high"], feats["low"] = np.where(swapped, hi, h), np.where(swapped, lo, l)
        for name, v in (("open", o), ("close", cl)):
            feats[name] = np.where(outside[name], np.clip(v, lo, hi), v)
        return int(swapped.sum()), int(outside["open"].sum()), int(outside["close"].sum())
    i = int(np.argmax(bad))
    if swapped[i]:
        what = f"high {h[i]:g} is below low {l[i]:g}"
    else:
        name, v = ("open", o) if outside["open"][i] else ("close", cl)
        what = f"{name} {v[i]:g} is outside [low {l[i]:g}, high {h[i]:g}]"
    raise DataError(
        f"{file}: {line_word(file)} {lines[i]}: {what} ({int(bad.sum())} bar(s) inconsistent: {counts}); "
        "fix the data or set data.repair=clip to clip them"
    )


def check_magnitude(label: str, values: np.ndarray, lines: np.ndarray, c: DataConfig, computed_amount: bool,
                    file: str = "") -> None:
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
            f"{label}: column {column}, {line_word(file)} {lines[row]}: value {values[row, k]:g} is too large "
            f"({int(big[:, k].sum())} such value(s)); values must stay below {limit:.3g} in magnitude so that float32 "
            f"windows and their de-normalisation (x * std + mean, |x| <= data.clip={c.clip:g}) stay finite; "
            "rescale the column"
        )
    tiny = float(np.finfo(np.float32).tiny)
    small = (values != 0) & (np.abs(values) < tiny)
    if small.any():
        row, k = (int(v) for v in np.argwhere(small)[0])
        raise DataError(
            f"{label}: column {FEATURES[k]!r}, {line_word(file)} {lines[row]}: value {values[row, k]:g} is too small "
            f"({int(small[:, k].sum())} such value(s)); float32 windows hold nonzero values from {tiny:.3g} in magnitude; "
            "rescale the column"
        )
