"""Series -> time splits -> leak-free, normalized windows.

The panel is split by one calendar (Calendar): the ratios cut the union of every series' timestamps
(n_train = floor(n * train_ratio), n_val = floor(n * val_ratio) of its n distinct timestamps) into
train, val and test dates, and each series' rows go to the split their dates fall in. So no series
trains on a date another series is tested on (markets move together); a series that starts late
joins only the splits it has enough rows in. One series splits by its own rows. A window is
`lookback_window + predict_window` consecutive rows inside one split of one series: windows never
cross a series or a split boundary. A window is normalized with the mean and (population) std of
its lookback rows only, so nothing from the forecast horizon leaks into the model's input:

    x = clip((window - mean(lookback)) / (std(lookback) + 1e-5), -clip, clip)   (frame.lookback_normalize)

build_datasets keeps the panel once: every series end to end in one float32 array of values, one of
calendar features and one of timestamps, which the three splits share (each with its series' rows
and an index of window starts) and of which the series' own arrays are views; `__getitem__`
slices and normalizes with numpy, no pandas per sample.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..window import WindowSpec
from .assembly import Series
from .config import DataConfig, DataError, validate_config
from .frame import FEATURES, TIME_FEATURES, lookback_normalize, time_features
from .paths import resolve_paths
from .cache import cached_series

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_VAL_WINDOWS = 8  # fewer and the validation loss is too noisy to pick an epoch by


class DeviceWindows:
    """A WindowDataset's batches computed on a device: ``batch(indices)`` gives what the
    dataset's own gives (``lookback_normalize`` in float64 there too), already there."""

    on_device = True

    def __init__(self, windows: "WindowDataset", device: torch.device):
        self.window, self.lookback_window, self.clip = windows.window, windows.lookback_window, windows.clip
        # Only this split's rows go to the device (build_datasets' splits share one panel on the host).
        rows = windows.split_rows()
        self.values = torch.from_numpy(windows._values[rows]).to(device)
        self.stamps = torch.from_numpy(windows._stamps[rows]).to(device)
        packed = np.cumsum(windows.lengths) - windows.lengths  # series k's first row among the split's rows
        self.first_row = torch.from_numpy(packed[windows.index[:, 0]] + windows.index[:, 1]).to(device)
        self.arange = torch.arange(self.window, device=device)

    def __len__(self) -> int:
        return len(self.first_row)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.values.device, non_blocking=True)
        rows = self.first_row[idx][:, None] + self.arange  # [B, L+P]
        x, _, _ = lookback_normalize(self.values[rows], self.lookback_window, self.clip, dtype=np.float64)
        return x, self.stamps[rows]


def _even_subsample(n: int, k: Optional[int]) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return (np.arange(k, dtype=np.int64) * n) // k


class WindowDataset(Dataset):
    """Windows of one split. Item i -> (x float32 [L+P, 6], stamp float32 [L+P, 5]).

    Built from per-series arrays of one split: `values[k]` float32 [n_k, 6] (FEATURES order),
    `stamps[k]` float32 [n_k, 5] (TIME_FEATURES order), optional `timestamps[k]` datetime64 [n_k].
    Windows start every `stride` rows and never cross from one series into the next.
    """

    def __init__(
        self,
        values: Sequence[np.ndarray],
        stamps: Sequence[np.ndarray],
        lookback_window: int,
        predict_window: int,
        *,
        clip: float = WindowSpec.clip,
        stride: int = 1,
        max_windows: Optional[int] = None,
        names: Optional[Sequence[str]] = None,
        timestamps: Optional[Sequence[np.ndarray]] = None,
    ) -> None:
        if len(values) != len(stamps):
            raise ValueError(f"values ({len(values)} series) and stamps ({len(stamps)} series) differ")
        names = list(names) if names is not None else [str(k) for k in range(len(values))]
        lengths = np.array([len(v) for v in values], dtype=np.int64)
        for k, (v, s) in enumerate(zip(values, stamps)):
            if len(v) != len(s):
                raise ValueError(f"series {names[k]}: {len(v)} value rows but {len(s)} stamp rows")
        width_v = values[0].shape[1] if len(values) else len(FEATURES)
        width_s = stamps[0].shape[1] if len(stamps) else len(TIME_FEATURES)
        self._over(
            np.ascontiguousarray(np.concatenate(values) if len(values) else np.empty((0, width_v)), dtype=np.float32),
            np.ascontiguousarray(np.concatenate(stamps) if len(stamps) else np.empty((0, width_s)), dtype=np.float32),
            np.concatenate(timestamps).astype("datetime64[ns]") if timestamps is not None and len(timestamps) else None,
            np.cumsum(lengths) - lengths, lengths, lookback_window, predict_window, clip, stride, max_windows, names)

    @classmethod
    def over_panel(cls, values: np.ndarray, stamps: np.ndarray, timestamps: Optional[np.ndarray], first: Sequence[int],
                   lengths: Sequence[int], lookback_window: int, predict_window: int, *, clip: float = WindowSpec.clip,
                   stride: int = 1, max_windows: Optional[int] = None,
                   names: Optional[Sequence[str]] = None) -> "WindowDataset":
        """The windows of series k over rows ``first[k] : first[k] + lengths[k]`` of arrays that
        hold the whole panel (float32 values [N, 6], stamps [N, 5], datetime64[ns] timestamps [N]),
        shared, not copied: build_datasets gives the three splits one set of arrays, of which the
        series' own are views. Items, batches and the index are those of the per-series constructor."""
        self = cls.__new__(cls)
        self._over(values, stamps, timestamps, first, lengths, lookback_window, predict_window, clip, stride,
                   max_windows, names)
        return self

    def _over(self, values: np.ndarray, stamps: np.ndarray, timestamps: Optional[np.ndarray], first: Sequence[int],
              lengths: Sequence[int], lookback_window: int, predict_window: int, clip: float, stride: int,
              max_windows: Optional[int], names: Optional[Sequence[str]]) -> None:
        """What both constructors make: series k is rows first[k] : first[k] + lengths[k] of the
        arrays; its windows indexed."""
        self.lookback_window, self.predict_window = int(lookback_window), int(predict_window)
        self.window = self.lookback_window + self.predict_window
        self.clip, self.stride = float(clip), int(stride)
        self.names = list(names) if names is not None else [str(k) for k in range(len(lengths))]
        self._values, self._stamps, self._timestamps = values, stamps, timestamps
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.asarray(first, dtype=np.int64)  # series k: rows offsets[k] : offsets[k] + lengths[k]
        # Window j of the split is start (j - before[k]) * stride of the series k it falls in: the
        # kept windows' (series, start) without listing every window first.
        counts = -(-np.maximum(self.lengths - self.window + 1, 0) // self.stride)  # windows per series
        ends = np.cumsum(counts)
        self.total_windows = int(ends[-1]) if len(ends) else 0
        kept = _even_subsample(self.total_windows, max_windows)  # a new array: worked on in place
        index = np.empty((len(kept), 2), dtype=np.int64)
        index[:, 0] = np.searchsorted(ends, kept, side="right")
        kept -= (ends - counts)[index[:, 0]]
        kept *= self.stride
        index[:, 1] = kept
        del kept
        self.index = np.ascontiguousarray(index)  # [M, 2]: (series, start row within the series' split)
        self._first_row = self.offsets[self.index[:, 0]]  # [M] row in the contiguous array
        self._first_row += self.index[:, 1]
        self._arange = np.arange(self.window, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def split_rows(self) -> np.ndarray | slice:
        """The rows of the arrays this split's series occupy, in series order."""
        ends = self.offsets + self.lengths
        if len(self.lengths) == 0 or (self.offsets[0] == 0 and (self.offsets[1:] == ends[:-1]).all()):
            return slice(0, int(ends[-1]) if len(ends) else 0)
        return np.concatenate([np.arange(a, b) for a, b in zip(self.offsets, ends)])

    def _rows(self, i: int | tuple[int, int]) -> slice:
        """Rows of window i, or of the window at (series, start) (any window of the split, kept or not)."""
        if isinstance(i, tuple):
            series, start = i
            if not (0 <= series < len(self.lengths) and 0 <= start <= self.lengths[series] - self.window):
                raise IndexError(f"no window starts at row {start} of series {series}")
            first = int(self.offsets[series]) + int(start)
        elif not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        else:
            first = int(self._first_row[i])
        return slice(first, first + self.window)

    def starts(self, series: int) -> np.ndarray:
        """Every window start of a series in this split, before ``max_windows`` left some out."""
        return np.arange(0, max(int(self.lengths[series]) - self.window + 1, 0), self.stride, dtype=np.int64)

    def origin_dates(self, series: int) -> np.ndarray:
        """datetime64[ns] [n]: the date a forecast from the window starting at row p of the series is
        made (its last lookback bar), for every row p a window fits at, stride or not (needs
        `timestamps` at construction)."""
        if self._timestamps is None:
            raise ValueError("this WindowDataset was built without timestamps")
        n = max(int(self.lengths[series]) - self.window + 1, 0)
        first = self.offsets[series] + self.lookback_window - 1
        return self._timestamps[first:first + n]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows(i)
        x, _, _ = lookback_normalize(self._values[rows], self.lookback_window, self.clip, dtype=np.float64)
        return torch.from_numpy(x), torch.from_numpy(self._stamps[rows].copy())

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows `indices` at once: (x [B, L+P, 6], stamp [B, L+P, 5]); same values as stacking items."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        rows = self._first_row[idx][:, None] + self._arange[None, :]  # [B, L+P]
        x, _, _ = lookback_normalize(self._values[rows], self.lookback_window, self.clip, dtype=np.float64)
        return torch.from_numpy(x), torch.from_numpy(self._stamps[rows])

    def on(self, device: torch.device | str) -> "DeviceWindows":
        """These windows built on ``device`` (a GPU): the split's rows live there and a batch is
        gathered and normalized there, with no host work or copy per batch."""
        return DeviceWindows(self, torch.device(device))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # DataLoader's batched fetch: normalize the whole batch in one numpy call.
        x, stamp = self.batch(indices)
        return list(zip(x.unbind(0), stamp.unbind(0)))

    # Helpers for evaluation / plotting (not needed for training): i is a window index, or (series, start).
    def raw(self, i: int | tuple[int, int]) -> np.ndarray:
        """Window i before normalization, float32 [L+P, 6]."""
        return self._values[self._rows(i)].copy()

    def timestamps(self, i: int | tuple[int, int]) -> np.ndarray:
        """datetime64[ns] [L+P] of window i (needs `timestamps` at construction)."""
        if self._timestamps is None:
            raise ValueError("this WindowDataset was built without timestamps")
        return self._timestamps[self._rows(i)].copy()

    def series_name(self, i: int | tuple[int, int]) -> str:
        return self.names[int(i[0] if isinstance(i, tuple) else self.index[i, 0])]


@dataclass
class DataSplits:
    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    series: list[Series]
    summary: dict = field(default_factory=dict)

    @property
    def file_digests(self) -> list[str]:
        """sha256 of each file's bytes as read for these series, in load order."""
        return [digest for _, digest in dict.fromkeys((s.source, s.source_sha256) for s in self.series)]


def split_sizes(n: int, train_ratio: float, val_ratio: float) -> tuple[int, int, int]:
    """Rows of (train, val, test) for a series of n rows; with no test share, val takes the rest."""
    n_train = int(math.floor(n * train_ratio + 1e-9))
    n_val = n - n_train if train_ratio + val_ratio >= 1 - 1e-9 else int(math.floor(n * val_ratio + 1e-9))
    return n_train, n_val, n - n_train - n_val


def _rows_needed(need: int, c: DataConfig) -> int:
    """Smallest series length whose every split has at least `need` rows."""
    used = [r for r in (c.train_ratio, c.val_ratio, c.test_ratio) if r > 0]
    n = int(math.ceil(need / min(used)))
    while min(split_sizes(n, c.train_ratio, c.val_ratio)[:len(used)]) < need:
        n += 1
    return n


def _check_not_constant(s: Series) -> None:
    """A series whose prices never move has nothing to learn (every window normalizes to zero)."""
    prices = s.values[:, :4]
    if len(s) and (prices == prices[0]).all():
        shown = ", ".join(f"{v:g}" for v in prices[0])
        raise DataError(
            f"series {s.name!r} ({s.source}): open, high, low and close never change in its {len(s)} rows ({shown}); "
            "nothing to learn from a constant series, remove it"
        )


@dataclass(frozen=True, eq=False)
class Calendar:
    """The panel's split boundaries as dates shared by every series: the train/val/test ratios
    applied to ``dates``, the union of all series' timestamps. ``val_start`` is the first validation
    timestamp, ``test_start`` the first test one (None: no test split). One series splits by its own rows."""
    dates: np.ndarray
    val_start: np.datetime64
    test_start: Optional[np.datetime64]

    @classmethod
    def of(cls, series: list[Series], c: DataConfig) -> "Calendar":
        # Series of one market share their dates: each series' timestamps once, then the distinct
        # ones by hashing and sorted (np.unique would sort every row of the panel).
        seen: dict[tuple, list[np.ndarray]] = {}
        distinct = []
        for s in series:
            ts = s.timestamps.astype("datetime64[ns]", copy=False)
            same = seen.setdefault((len(ts), ts[0], ts[-1]) if len(ts) else (0,), [])
            if any(np.array_equal(ts, other) for other in same):
                continue
            if len(same) < 4:  # a few to compare with, not every series of a panel whose dates differ
                same.append(ts)
            distinct.append(ts)
        stamps = np.concatenate(distinct) if distinct else np.empty(0, "datetime64[ns]")
        union = np.sort(pd.unique(stamps.view(np.int64))).view("datetime64[ns]")
        del stamps, distinct, seen
        n_train, n_val, n_test = split_sizes(len(union), c.train_ratio, c.val_ratio)
        return cls(union, union[min(n_train, len(union) - 1)], union[n_train + n_val] if n_test > 0 else None)

    def bounds(self, timestamps: np.ndarray) -> np.ndarray:
        """[0, first val row, first test row, n] of one series' rows (ascending timestamps)."""
        ts = timestamps.astype("datetime64[ns]")
        test = len(ts) if self.test_start is None else int(np.searchsorted(ts, self.test_start))
        return np.array([0, int(np.searchsorted(ts, self.val_start)), test, len(ts)])

    def describe(self) -> dict[str, str]:
        """Each split's first and last timestamp over the panel, as the banner shows them."""
        bounds = self.bounds(self.dates)
        return {split: f"{pd.Timestamp(self.dates[lo])} .. {pd.Timestamp(self.dates[hi - 1])}"
                for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]) if hi > lo}


def _split_series(series: list[Series], calendar: Calendar, c: DataConfig,
                  need: int) -> tuple[dict[str, dict[str, list]], list]:
    """Which rows of each series go to which split by the panel's calendar: per split, the series
    (index into ``series``, first row, end row, name) in series order. A series joins the splits
    its dates fall in and holds `need` rows of. Also the series that join none, with their rows per split."""
    parts: dict[str, dict[str, list]] = {s: {"series": [], "lo": [], "hi": [], "names": []} for s in SPLITS}
    too_short, partial = [], []
    for k, s in enumerate(series):
        _check_not_constant(s)
        bounds = calendar.bounds(s.timestamps)
        sizes = tuple(int(b) for b in np.diff(bounds))
        joined = [split for split, n in zip(SPLITS, sizes) if n >= need]
        every = len(joined) == (3 if c.test_ratio > 0 else 2)
        if not joined or (len(series) == 1 and not every):  # one series must fill every split, as before
            too_short.append((s, sizes))
            continue
        if not every:
            partial.append(f"{s.name!r} ({', '.join(joined)})")
        for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
            if split not in joined:
                continue
            p = parts[split]
            p["series"].append(k)
            p["lo"].append(int(lo))
            p["hi"].append(int(hi))
            p["names"].append(s.name)
    if partial:
        log.info("data: %d series join only the splits their dates fill (%s rows each): %s", len(partial), need,
                 "; ".join(partial[:10]) + (f"; ... and {len(partial) - 10} more" if len(partial) > 10 else ""))
    return parts, too_short


def _panel(series: list[Series], dates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every series' values, calendar features and timestamps end to end in one array each, and
    each series' first row there. Each series' own arrays become views of the panel's as it is
    copied in, so the rows are held once (their old arrays go as the panel fills). ``dates``: the
    sorted union of the series' timestamps (Calendar.dates)."""
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    first = np.cumsum(lengths) - lengths
    n = int(lengths.sum())
    stamps = np.empty((n, len(TIME_FEATURES)), dtype=np.float32)
    joined = _joined(series, n)
    if joined is not None:  # one file's series, already end to end (collect): no copy
        values, timestamps = joined
    else:
        values = np.empty((n, len(FEATURES)), dtype=np.float32)
        timestamps = np.empty(n, dtype="datetime64[ns]")
        for s, a, m in zip(series, first, lengths):
            rows = slice(int(a), int(a + m))
            values[rows] = s.values
            timestamps[rows] = s.timestamps
            s.values, s.timestamps = values[rows], timestamps[rows]
    if 4 * len(dates) <= n:  # a panel's series share their dates: the features of each date, looked up
        features = time_features(dates)
        for s, a, m in zip(series, first, lengths):
            np.take(features, np.searchsorted(dates, s.timestamps), axis=0, out=stamps[int(a): int(a + m)])
    else:
        time_features(timestamps, out=stamps)
    return values, stamps, timestamps, first


def _joined(series: list[Series], n: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The values [n, 6] and timestamps [n] that the series' arrays are consecutive row blocks of,
    when they are (the series of one file as `collect` gives them); else None."""
    if not series:
        return None
    values, timestamps = series[0].values.base, series[0].timestamps.base
    if not (type(values) is np.ndarray and type(timestamps) is np.ndarray and values.dtype == np.float32
            and timestamps.dtype == np.dtype("datetime64[ns]") and values.shape[1:] == (len(FEATURES),)
            and values.flags.c_contiguous and timestamps.flags.c_contiguous and len(values) >= n
            and len(timestamps) >= n):
        return None
    at = 0
    for s in series:
        if not (s.values.base is values and s.timestamps.base is timestamps
                and s.values.shape == (len(s), len(FEATURES))
                and s.values.strides == values.strides and s.timestamps.strides == timestamps.strides
                and s.values.ctypes.data == values.ctypes.data + at * values.strides[0]
                and s.timestamps.ctypes.data == timestamps.ctypes.data + at * timestamps.strides[0]):
            return None
        at += len(s)
    return values[:n], timestamps[:n]


def _too_short_error(too_short: list, need: int, c: DataConfig) -> DataError:
    total = _rows_needed(need, c)
    lines = [
        f"series {s.name!r} ({s.source}): {len(s)} rows -> train {a}, val {b}, test {t}"
        for s, (a, b, t) in too_short[:10]
    ]
    more = f"; ... and {len(too_short) - 10} more" if len(too_short) > 10 else ""
    return DataError(
        f"{len(too_short)} series too short: each split needs at least lookback_window + predict_window + 1 = "
        f"{c.lookback_window} + {c.predict_window} + 1 = {need} rows, i.e. at least {total} rows per series with "
        f"train/val/test ratios {c.train_ratio}/{c.val_ratio}/{c.test_ratio}: "
        + "; ".join(lines)
        + more
        + "; use longer series, a smaller data.lookback_window/data.predict_window, or other ratios"
    )


def build_datasets(settings: Any, cache_dir: Optional[Path] = None) -> DataSplits:
    """Load the CSVs `settings` names, split each series by time and build the three window datasets.

    With ``cache_dir`` (and data.cache true) the validated series are read from and kept in that
    cache (data/cache.py); without, the files are read.

    Raises DataError when a series is too short for a window plus one row in any split, or its
    prices never change.
    """
    c = validate_config(settings)
    started = time.perf_counter()
    series = cached_series(c, cache_dir if c.cache else None)
    need = c.lookback_window + c.predict_window + 1
    calendar = Calendar.of(series, c)
    parts, too_short = _split_series(series, calendar, c, need)
    if too_short:
        raise _too_short_error(too_short, need, c)
    for split in SPLITS[:3 if c.test_ratio > 0 else 2]:
        if not parts[split]["series"]:
            raise DataError(f"no series has {need} rows (lookback_window + predict_window + 1) in the {split} split "
                            f"({calendar.describe().get(split, 'no dates')}); use longer series, a smaller "
                            "data.lookback_window/data.predict_window, or other ratios")

    values, stamps, timestamps, first = _panel(series, calendar.dates)
    caps = {"train": c.max_train_windows, "val": c.max_eval_windows, "test": c.max_eval_windows}
    datasets = {
        split: WindowDataset.over_panel(
            values,
            stamps,
            timestamps,
            first[np.asarray(p["series"], dtype=np.int64)] + np.asarray(p["lo"], dtype=np.int64),
            np.asarray(p["hi"], dtype=np.int64) - np.asarray(p["lo"], dtype=np.int64),
            c.lookback_window,
            c.predict_window,
            clip=c.clip,
            stride=c.stride,
            max_windows=caps[split],
            names=p["names"],
        )
        for split, p in parts.items()
    }
    summary = _summary(c, series, datasets, calendar)
    log.info(
        "data: %d series from %d file(s) in %.2f s, rows %s, windows %s",
        summary["n_series"], summary["n_files"], time.perf_counter() - started, summary["rows"], summary["windows"],
    )
    if c.test_ratio == 0:
        log.info("data: test_ratio=0, so there is no test split: nothing is evaluated on held-out test windows")
    if len(datasets["val"]) < MIN_VAL_WINDOWS:
        log.warning("data: only %d validation window(s): the val_loss that picks the best epoch (and a sweep's "
                    "objective) rests on very little data; use more or longer series, a larger data.val_ratio "
                    "or a smaller data.stride", len(datasets["val"]))
    return DataSplits(series=series, summary=summary, **datasets)


def _summary(c: DataConfig, series: list[Series], datasets: dict[str, WindowDataset], calendar: Calendar) -> dict:
    files = sorted({s.source for s in series}) or [str(p) for p in resolve_paths(c)]
    start = min(s.timestamps[0] for s in series)
    end = max(s.timestamps[-1] for s in series)
    return {
        "n_series": len(series),
        "series": [s.name for s in series][:20],
        "n_files": len(files),
        "files": files[:20],
        "rows": {k: int(d.lengths.sum()) for k, d in datasets.items()},
        "windows": {k: len(d) for k, d in datasets.items()},
        "windows_available": {k: d.total_windows for k, d in datasets.items()},
        "start": str(pd.Timestamp(start)),
        "end": str(pd.Timestamp(end)),
        "split_dates": calendar.describe(),
        "lookback_window": c.lookback_window,
        "predict_window": c.predict_window,
    }
