"""Validated series kept on disk, so a sweep's later jobs and later runs skip reading and checking.

    series = cached_series(c, default_cache_dir())   # load_series(c), read once per data and settings

An entry is a folder ``<cache dir>/<key>/``: one ``.npy`` per array field of `Series` (every
series end to end, memory-mapped on a hit) and ``manifest.json`` (format, key, each data file's
stat and sha256, each array file's sha256 as written, each series' other fields and row count,
the reader's log lines to replay).

The key hashes the resolved paths of the files, the settings that change what the reader returns
(every DataConfig field except `AFTER_LOADING`) and the data layer's source code; a file that
changes replaces its entry. As git's index does, a data file is trusted to hold the bytes the
manifest's sha256 names while its size, mtime, ctime and inode are the ones recorded: stat costs
microseconds where hashing 1.2 GB costs seconds, and ctime cannot be set back, so an edit in place
shows even with its size kept and its mtime restored (``touch -r``). A file whose stat differs
is hashed again: the same bytes keep the entry (its record is renewed), other bytes are read
again. A file whose mtime or ctime was within `RACY_NS` of the moment it was read could change
again without a new stat (coarse file-system clocks): it is hashed on each hit until one finds
that stat old enough (git's "racily clean" entries).
So a series' `source_sha256`, which the fingerprint uses, is always of the bytes it came from.

Trust: the cache folder (under the user's outputs/) is trusted as much as that folder, not more.
Whoever can write it can write any digest too, so nothing here proves an entry authentic; what a
hit guarantees is that everything read from the entry is consistent (arrays hash to the manifest's
digests and agree with its types, shapes and rows; each series' digest is its file's; the files
are the ones this load reads) and passes the reader's checks that still apply to its values
(`_check_series`). Only regular files directly in the entry folder are opened: a link, FIFO or
device would be followed, or waited on forever. An entry that fails any of this is replaced, with
one warning that names it and the reason.

An entry appears at once or not at all: it is written in a temporary folder and renamed into
place, so a crashed writer leaves no half entry and jobs writing the same key at once keep one.
Nothing is evicted: delete the cache folder to free its space.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Optional

import numpy as np

from ..outputs import outputs_root
from .assembly import Series
from .checks import check_bars, check_magnitude, check_not_negative, check_prices
from .collect import CHUNK_ROWS
from .config import DataConfig
from .digest import file_sha256, stream_sha256
from .frame import FEATURES, PRICE_COLUMNS
from .paths import resolve_paths
from .reading import load_series

log = logging.getLogger(__name__)

FORMAT = 2  # of an entry's files; another value is a different key
# DataConfig fields that act after loading (windows, splits) or only say where files are (the
# resolved files are in the key): changing them keeps the entry. Every other field is in the key.
AFTER_LOADING = ("path", "paths", "cache", "lookback_window", "predict_window", "train_ratio", "val_ratio",
                 "test_ratio", "stride", "max_train_windows", "max_eval_windows")
RACY_NS = 2_000_000_000  # stats this close to the read are not trusted to show the next change
STALE_TMP_S = 6 * 3600  # a writer's temporary folder older than this was left by a crash
MANIFEST = "manifest.json"
F32_ROUNDING = 2.0**-22  # relative: twice the float32 rounding of a price, with room to spare


class Unusable(Exception):
    """An entry that is whole but does not serve this load: a data file now holds other bytes."""


def default_cache_dir() -> Path:
    """outputs/cache/series under the working folder, beside the default MLflow store: shared by
    a sweep's jobs and by later runs started in the same folder."""
    return outputs_root() / "cache" / "series"


def reading_settings(c: DataConfig) -> dict[str, Any]:
    """The settings an entry depends on: every DataConfig field but `AFTER_LOADING`."""
    return {k: v for k, v in dataclasses.asdict(c).items() if k not in AFTER_LOADING}


def _code_digest() -> str:
    """sha256 of the data layer's sources: a reader that changed may read the same bytes otherwise."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _stat(path: Path) -> dict[str, int]:
    """What changes whenever a file's bytes may have: size, mtime, ctime (a write or a utime sets
    it to now, nothing sets it back) and inode (a file renamed over it)."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _racy(st: dict[str, int], since: int) -> bool:
    """Whether a file changed this close to ``since`` could change again without a new stat."""
    return max(st["mtime_ns"], st["ctime_ns"]) > since - RACY_NS


def cache_key(paths: list[Path], c: DataConfig) -> str:
    payload = {"format": FORMAT, "files": [str(p) for p in paths], "settings": reading_settings(c),
               "code": _code_digest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class _Collect(logging.Handler):
    """The data layer's log lines while it reads, to say again on a hit (NaN counts, sorted rows)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append([record.levelno, record.getMessage()])


def cached_series(c: DataConfig, cache_dir: Optional[Path]) -> list[Series]:
    """`load_series(c)`, through the cache in ``cache_dir`` (None: no cache, read the files)."""
    if cache_dir is None:
        return load_series(c)
    paths = resolve_paths(c)
    entry = Path(cache_dir) / cache_key(paths, c)
    found = os.path.lexists(entry)
    if found:
        try:
            series, manifest = read_entry(entry, paths, c)
            for level, message in manifest["log"]:
                log.log(level, "%s", message)
            log.info("data: read from the cache %s (%d series, %d rows)", entry, len(series),
                     sum(len(s) for s in series))
            return series
        except Unusable as why:
            log.info("data: the cache %s no longer matches (%s); reading the files", entry, why)
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as why:
            log.warning("data: the cache %s is damaged (%s: %s); reading the files again and rebuilding it",
                        entry, type(why).__name__, why)
    before = [_stat(p) for p in paths]
    collect = _Collect()
    logging.getLogger(__package__).addHandler(collect)
    try:
        read_at = time.time_ns()
        series = load_series(c)
    finally:
        logging.getLogger(__package__).removeHandler(collect)
    if [_stat(p) for p in paths] != before:  # a file changed while it was read: no stat names what was read
        log.info("data: a data file changed while it was read; not caching these series")
        return series
    digests = {s.source: s.source_sha256 for s in series}  # every file gives a series, named by its path
    files = [{"path": str(p), **st, "sha256": digests[str(p)], "racy": _racy(st, read_at)}
             for p, st in zip(paths, before)]
    write_entry(entry, series, files, collect.lines, replace=found)
    return series


def _array_fields(series: list[Series]) -> list[str]:
    return [f.name for f in dataclasses.fields(Series) if isinstance(getattr(series[0], f.name), np.ndarray)]


def _write_npy(path: Path, parts: list[np.ndarray]) -> dict[str, Any]:
    """One .npy of ``parts`` end to end, written part by part (no copy of the whole), and the
    sha256 of its bytes as written, which a hit checks before it uses them."""
    first = parts[0]
    shape = (sum(len(p) for p in parts),) + first.shape[1:]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape})
    digest = hashlib.sha256(header.getvalue())
    with open(path, "wb") as fh:
        fh.write(header.getvalue())
        for part in parts:
            block = np.ascontiguousarray(part, dtype=first.dtype)
            block.tofile(fh)
            digest.update(block.view(np.uint8))
    return {"dtype": first.dtype.str, "shape": list(shape), "sha256": digest.hexdigest()}


def write_entry(entry: Path, series: list[Series], files: list[dict[str, Any]], lines: list, *,
                replace: bool = False) -> None:
    """Write ``series`` as cache entry ``entry`` atomically (``replace``: an unusable one that is
    there); a failure to write only costs the cache."""
    if not series:
        return
    tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        arrays = {name: _write_npy(tmp / f"{name}.npy", [getattr(s, name) for s in series])
                  for name in _array_fields(series)}
        rows = [{f.name: getattr(s, f.name) for f in dataclasses.fields(Series) if f.name not in arrays}
                | {"rows": len(s)} for s in series]
        manifest = {"format": FORMAT, "key": entry.name, "files": files, "arrays": arrays, "series": rows,
                    "log": lines}
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        if replace:
            _discard(entry)
        os.rename(tmp, entry)
        log.info("data: cached the validated series in %s", entry)
    except (OSError, TypeError, ValueError) as err:
        if not (entry / MANIFEST).exists():  # else another job published the same key first: fine
            log.warning("data: could not write the cache %s (%s); the series are used uncached", entry, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _sweep_stale(entry.parent)


def _discard(entry: Path) -> None:
    """Move ``entry`` out of the way (a rename, so readers never see it half deleted), then delete it."""
    trash = entry.parent / f".trash-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(entry, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_stale(cache_dir: Path) -> None:
    """Delete what crashed writers left (temporary folders hours old)."""
    for path in cache_dir.glob(".tmp-*"):
        try:
            if time.time() - path.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def read_entry(entry: Path, paths: list[Path], c: DataConfig) -> tuple[list[Series], dict[str, Any]]:
    """The series of a cache entry for the data files ``paths`` read with ``c``, their arrays
    memory-mapped (read-only), and its manifest, once all of it is consistent and checked.

    Raises Unusable for an entry whose data files now hold other bytes, and OSError, ValueError,
    KeyError, ... for a damaged one."""
    with _open_regular(entry / MANIFEST) as fh:
        manifest = json.load(fh)
    if manifest["format"] != FORMAT or manifest["key"] != entry.name:
        raise ValueError(f"its manifest is for format {manifest['format']}, key {manifest['key']}")
    renewed = _check_files(manifest["files"], paths)
    digests = {f["path"]: f["sha256"] for f in manifest["files"]}
    counts = [int(row["rows"]) for row in manifest["series"]]
    if min(counts, default=0) < 0:
        raise ValueError("its manifest counts rows below 0")
    bounds = np.cumsum([0] + counts)
    total = int(bounds[-1])
    arrays = {name: _map_array(entry, name, meta, total) for name, meta in manifest["arrays"].items()}
    series = [Series(**{k: v for k, v in row.items() if k != "rows"},
                     **{name: a[lo:hi] for name, a in arrays.items()})
              for row, lo, hi in zip(manifest["series"], bounds[:-1], bounds[1:])]
    if {s.source for s in series} != set(digests):  # every file the reader reads gives a series
        raise ValueError("its series are not those of its data files")
    for s in series:
        if digests.get(s.source) != s.source_sha256:  # the fingerprint's digest must be its file's
            raise ValueError(f"series {s.name!r} names sha256 {s.source_sha256}, not its file's")
        _check_series(s, c)
    if renewed:
        _renew(entry, manifest)
    return series, manifest


def _check_files(files: list[dict[str, Any]], paths: list[Path]) -> bool:
    """Check the manifest's record of each data file against the file now: its sha256 is believed
    while the stat is the one recorded and was not racy; else the file is hashed again, and other
    bytes make the entry Unusable. Returns whether a record was renewed (same bytes, new stat)."""
    if [f["path"] for f in files] != [str(p) for p in paths]:
        raise ValueError("its manifest lists other data files")
    renewed = False
    for f, path in zip(files, paths):
        st = _stat(path)
        if not f["racy"] and all(f[k] == v for k, v in st.items()):
            continue
        hashed_at = time.time_ns()
        if file_sha256(path) != f["sha256"]:
            raise Unusable(f"{path} holds other bytes than the ones cached")
        if _stat(path) == st:  # unchanged while hashed: the stat now names these bytes
            new = {**f, **st, "racy": _racy(st, hashed_at)}
            renewed |= new != f
            f.update(new)
    return renewed


def _renew(entry: Path, manifest: dict[str, Any]) -> None:
    """Rewrite ``entry``'s manifest with its files' new stat, so the next hit need not hash them
    (atomically: a reader sees the old one or the new one); failing only costs that hashing."""
    tmp = entry / f".{MANIFEST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, entry / MANIFEST)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file. A link could lead anywhere, and reading
    a FIFO or a device could wait or run forever: an entry holding one is damaged, and it is refused
    before anything is read."""
    try:  # O_NOFOLLOW: a link fails to open; O_NONBLOCK: a FIFO opens at once, to be refused
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path.name} is a symbolic link") from None
        raise
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise ValueError(f"{path.name} is not a regular file")
    return fh


def _map_array(entry: Path, name: str, meta: dict[str, Any], rows: int) -> np.ndarray:
    """Array ``name`` of ``entry`` memory-mapped read-only, once its file hashed to the digest
    recorded as it was written and its header agrees with the manifest."""
    if name not in {f.name for f in dataclasses.fields(Series)}:  # a field's name: no path out of the entry
        raise ValueError(f"its manifest names an array {name!r}")
    with _open_regular(entry / f"{name}.npy") as fh:
        if stream_sha256(fh) != meta["sha256"]:
            raise ValueError(f"{name}.npy is not the file that was written (its sha256 differs)")
        fh.seek(0)
        if np.lib.format.read_magic(fh) != (1, 0):
            raise ValueError(f"{name}.npy is not a version 1.0 .npy file")
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        if fortran or dtype.str != meta["dtype"] or list(shape) != meta["shape"] or list(shape[:1]) != [rows]:
            raise ValueError(f"{name}.npy holds {dtype.str} {list(shape)}, the manifest says "
                             f"{meta['dtype']} {meta['shape']} and {rows} rows")
        return np.memmap(fh, dtype=dtype, mode="r", offset=fh.tell(), shape=shape).view(np.ndarray)


def _check_series(s: Series, c: DataConfig) -> None:
    """The reader's checks that still hold of a series' float32 values, for an entry whose digests
    were rewritten to match: types, finite values, prices > 0, volume and amount >= 0, magnitudes
    that float32 windows hold, and, unless NaNs were forward-filled (a filled high may sit below
    the next low), consistent bars, each widened by the float32 rounding. A chunk at a time."""
    label, values, times = f"the cached series {s.name!r}", s.values, s.timestamps
    if values.dtype != np.float32 or values.shape[1:] != (len(FEATURES),) or times.dtype != "M8[ns]":
        raise ValueError(f"{label} holds {values.dtype} {values.shape[1:]} values at {times.dtype} times")
    for lo in range(0, len(s), CHUNK_ROWS):
        part = values[lo:lo + CHUNK_ROWS]
        lines = np.arange(lo + 1, lo + 1 + len(part))  # rows of the series, from 1
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            raise ValueError(f"{label}: row {lines[np.argmin(finite)]} holds a value that is not finite")
        feats = {k: part[:, i] for i, k in enumerate(FEATURES)}
        check_prices(feats, dict(zip(FEATURES, FEATURES)), label, lines)
        for name in ("volume", "amount"):
            check_not_negative(feats[name], name, label, name, lines)
        check_magnitude(label, part, lines, c, computed_amount=False, file=label)
        if c.nan_policy != "ffill":
            widen = {"high": 1 + F32_ROUNDING, "low": 1 - F32_ROUNDING}
            bars = {k: feats[k].astype(np.float64) * widen.get(k, 1.0) for k in PRICE_COLUMNS}
            if check_bars(bars, label, lines, c) is not None:  # data.repair=clip reports instead of raising
                raise ValueError(f"{label}: bars with high < low or open/close outside [low, high]")
