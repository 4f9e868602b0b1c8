"""Validated series kept on disk, so a sweep's later jobs and later runs skip reading and checking.

    series = cached_series(c, default_cache_dir())   # load_series(c), read once per data and settings

An entry is a folder ``<cache dir>/<key>/``: one ``.npy`` per array field of `Series` (every
series end to end, memory-mapped on a hit) and ``manifest.json`` (format, key, the files with
their sha256, each series' other fields and row count, the reader's log lines to replay).

The key hashes the files by (resolved path, size, mtime_ns), the settings that change what the
reader returns (every DataConfig field except `AFTER_LOADING`) and the data layer's source code.
Looking a file up by its stat costs microseconds where hashing 1.2 GB costs seconds; the sha256 of
each file as it was read is kept in the manifest and given to the series, so fingerprints stay
content digests. A file whose mtime was within `RACY_NS` of the moment it was read could change
again without a new mtime (coarse file-system clocks): its entry is marked and the file is hashed
again on every hit (as git does for "racily clean" index entries).

An entry appears at once or not at all: it is written in a temporary folder and renamed into
place, so a crashed writer leaves no half entry and jobs writing the same key at once keep one.
An entry that cannot be read back (bad JSON, truncated array, wrong shape) is replaced with a
warning. Nothing is evicted: delete the cache folder to free its space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..outputs import outputs_root
from .assembly import Series
from .config import DataConfig
from .digest import file_sha256
from .paths import resolve_paths
from .reading import load_series

log = logging.getLogger(__name__)

FORMAT = 1  # of an entry's files; another value is a different key
# DataConfig fields that act after loading (windows, splits) or only say where files are (the
# resolved files are in the key): changing them keeps the entry. Every other field is in the key.
AFTER_LOADING = ("path", "paths", "cache", "lookback_window", "predict_window", "train_ratio", "val_ratio",
                 "test_ratio", "stride", "max_train_windows", "max_eval_windows")
RACY_NS = 2_000_000_000  # mtimes this close to the read are not trusted to show the next change
STALE_TMP_S = 6 * 3600  # a writer's temporary folder older than this was left by a crash
MANIFEST = "manifest.json"


class Unusable(Exception):
    """An entry that cannot serve this load (damaged, or for another version of a racy file)."""


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


def _stats(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def cache_key(stats: list[dict[str, Any]], c: DataConfig) -> str:
    payload = {"format": FORMAT, "files": stats, "settings": reading_settings(c), "code": _code_digest()}
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
    before = _stats(paths)
    entry = Path(cache_dir) / cache_key(before, c)
    found = entry.exists()
    if found:
        try:
            series, manifest = read_entry(entry, entry.name)
            for level, message in manifest["log"]:
                log.log(level, "%s", message)
            log.info("data: read from the cache %s (%d series, %d rows)", entry, len(series),
                     sum(len(s) for s in series))
            return series
        except Unusable as why:
            log.info("data: the cache %s no longer matches (%s); reading the files", entry, why)
        except (OSError, ValueError, EOFError, KeyError, TypeError) as why:
            log.warning("data: the cache %s is damaged (%s: %s); reading the files again and rebuilding it",
                        entry, type(why).__name__, why)
    collect = _Collect()
    logging.getLogger(__package__).addHandler(collect)
    try:
        read_at = time.time_ns()
        series = load_series(c)
    finally:
        logging.getLogger(__package__).removeHandler(collect)
    if _stats(paths) != before:  # a file changed while it was read: what was read has no stat to file under
        log.info("data: a data file changed while it was read; not caching these series")
        return series
    write_entry(entry, series, _files(before, series, read_at), collect.lines, replace=found)
    return series


def _files(stats: list[dict[str, Any]], series: list[Series], read_at: int) -> list[dict[str, Any]]:
    """The manifest's files: stat, the sha256 the series recorded, and whether the stat is racy."""
    digests = {s.source: s.source_sha256 for s in series}
    out = []
    for st in stats:
        racy = st["mtime_ns"] > read_at - RACY_NS
        sha = digests.get(st["path"]) or (file_sha256(st["path"]) if racy else "")
        out.append({**st, "sha256": sha, "racy": racy})
    return out


def _array_fields(series: list[Series]) -> list[str]:
    return [f.name for f in dataclasses.fields(Series) if isinstance(getattr(series[0], f.name), np.ndarray)]


def _write_npy(path: Path, parts: list[np.ndarray]) -> dict[str, Any]:
    """One .npy of ``parts`` end to end, written part by part (no copy of the whole)."""
    first = parts[0]
    shape = (sum(len(p) for p in parts),) + first.shape[1:]
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape})
        for part in parts:
            np.ascontiguousarray(part, dtype=first.dtype).tofile(fh)
    return {"dtype": first.dtype.str, "shape": list(shape)}


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


def read_entry(entry: Path, key: str) -> tuple[list[Series], dict[str, Any]]:
    """The series of a cache entry, their arrays memory-mapped (read-only), and its manifest.

    Raises Unusable for an entry that is whole but does not serve this load, and OSError,
    ValueError, KeyError, ... for a damaged one."""
    manifest = json.loads((entry / MANIFEST).read_text())
    if manifest["format"] != FORMAT or manifest["key"] != key:
        raise ValueError(f"its manifest is for format {manifest['format']}, key {manifest['key']}")
    for f in manifest["files"]:
        if f["racy"] and file_sha256(f["path"]) != f["sha256"]:
            raise Unusable(f"{f['path']} changed without a new mtime")
    bounds = np.cumsum([0] + [int(row["rows"]) for row in manifest["series"]])
    arrays = {}
    for name, meta in manifest["arrays"].items():
        array = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        if array.dtype.str != meta["dtype"] or list(array.shape) != meta["shape"] or len(array) != bounds[-1]:
            raise ValueError(f"{name}.npy holds {array.dtype.str} {list(array.shape)}, the manifest says "
                             f"{meta['dtype']} {meta['shape']} and {bounds[-1]} rows")
        arrays[name] = array.view(np.ndarray)
    series = [Series(**{k: v for k, v in row.items() if k != "rows"},
                     **{name: a[lo:hi] for name, a in arrays.items()})
              for row, lo, hi in zip(manifest["series"], bounds[:-1], bounds[1:])]
    return series, manifest
