"""The cache of validated series (kronos_exp/data/cache.py): hits, misses, damaged entries, and
writers at the same time, on small CSVs read for real."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kronos_exp.data import DataConfig, build_datasets, load_series
from kronos_exp.data import cache as cache_module
from kronos_exp.data.cache import AFTER_LOADING, cache_key, cached_series, reading_settings
from kronos_exp.data.digest import file_sha256

HIT = "data: read from the cache"


def _two_symbols(ohlcv_frame, n: int = 300) -> pd.DataFrame:
    a, b = ohlcv_frame(n, seed=1), ohlcv_frame(n, seed=2)
    a.insert(1, "symbol", "AAA")
    b.insert(1, "symbol", "BBB")
    return pd.concat([b, a])  # not in symbol order: the reader sorts them


@pytest.fixture
def data(tmp_path, frame):
    """(config, cache folder) for a CSV of two symbols written long enough ago to trust its mtime."""
    path = tmp_path / "prices.csv"
    _two_symbols(frame).to_csv(path, index=False)
    _age(path)
    return DataConfig(path=str(path), symbol_column="symbol", lookback_window=16, predict_window=4), tmp_path / "cache"


def _age(path: Path, seconds: int = 60) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir()) if cache.exists() else []


def _assert_same(got, want) -> None:
    assert [(s.name, s.source, s.source_sha256) for s in got] == [(s.name, s.source, s.source_sha256) for s in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.values, w.values)
        np.testing.assert_array_equal(g.timestamps, w.timestamps)
        assert g.values.dtype == w.values.dtype and g.timestamps.dtype == w.timestamps.dtype


def test_second_load_reads_the_cache_memory_mapped(data, caplog):
    c, cache = data
    caplog.set_level(logging.INFO, logger="kronos_exp")
    first = cached_series(c, cache)
    assert HIT not in caplog.text and "cached the validated series" in caplog.text
    (entry,) = _entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == ["manifest.json", "timestamps.npy", "values.npy"]
    caplog.clear()
    second = cached_series(c, cache)
    assert f"{HIT} {entry} (2 series, 600 rows)" in caplog.text
    _assert_same(second, first)
    _assert_same(second, load_series(c))
    assert not second[0].values.flags.writeable  # a view of the mapped file, not a copy
    assert isinstance(second[0].values.base, np.memmap) or isinstance(second[0].values.base.base, np.memmap)


def test_every_setting_but_the_windowing_ones_is_in_the_key(data):
    c, _ = data
    paths = [Path(c.path)]
    key = cache_key(paths, c)
    for name in reading_settings(c):  # whatever fields DataConfig grows, they miss unless listed
        assert cache_key(paths, dataclasses.replace(c, **{name: "changed"})) != key, name
    for name in set(AFTER_LOADING) - {"path", "paths"}:
        assert cache_key(paths, dataclasses.replace(c, **{name: 7})) == key, name
    assert set(reading_settings(c)) >= {"symbol_column", "timestamp_column", "timestamp_format", "dayfirst",
                                         "column_map", "nan_policy", "repair", "clip"}
    assert cache_key([Path(c.path + ".other")], c) != key
    assert cache_key(paths * 2, c) != key


@pytest.mark.parametrize("change, hits", [
    ({"lookback_window": 8, "predict_window": 2, "stride": 3, "train_ratio": 0.7, "val_ratio": 0.2,
      "max_train_windows": 10, "max_eval_windows": 5}, True),
    ({"nan_policy": "drop"}, False),
    ({"repair": "clip"}, False),
    ({"clip": 4.0}, False),  # the float32 range check depends on it
])
def test_a_setting_that_changes_the_series_misses_and_others_hit(data, caplog, change, hits):
    c, cache = data
    build_datasets(c, cache_dir=cache)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="kronos_exp")
    splits = build_datasets(dataclasses.replace(c, **change), cache_dir=cache)
    assert (HIT in caplog.text) is hits
    assert len(_entries(cache)) == (1 if hits else 2)
    assert splits.file_digests == build_datasets(c).file_digests


def test_same_files_named_another_way_hit(data, caplog):
    c, cache = data
    cached_series(c, cache)
    caplog.set_level(logging.INFO, logger="kronos_exp")
    cached_series(DataConfig(paths=[str(Path(c.path).parent / "*.csv")], symbol_column="symbol"), cache)
    assert HIT in caplog.text


def test_a_changed_file_misses(data, frame, caplog):
    c, cache = data
    before = cached_series(c, cache)
    _two_symbols(frame, 310).to_csv(c.path, index=False)
    _age(Path(c.path), 30)
    caplog.set_level(logging.INFO, logger="kronos_exp")
    after = cached_series(c, cache)
    assert HIT not in caplog.text
    assert len(after[0]) == 310 and after[0].source_sha256 != before[0].source_sha256
    assert len(_entries(cache)) == 1  # the entry of the old bytes is replaced, not kept beside the new one


def test_a_file_changed_within_its_mtime_is_hashed_again(data, caplog):
    """A file read just after it was written is 'racy': same size and mtime need not mean same bytes."""
    c, cache = data
    path = Path(c.path)
    os.utime(path)  # written now
    cached_series(c, cache)
    st = path.stat()
    text = path.read_text()
    path.write_text(text.replace("AAA", "AAB"))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    caplog.set_level(logging.INFO, logger="kronos_exp")
    after = cached_series(c, cache)
    assert HIT not in caplog.text and "holds other bytes than the ones cached" in caplog.text
    assert [s.name for s in after] == ["AAB", "BBB"]
    caplog.clear()
    assert [s.name for s in cached_series(c, cache)] == ["AAB", "BBB"]  # the new content, now cached
    assert HIT in caplog.text


@pytest.fixture
def trusted_stat(monkeypatch):
    """No file counts as racy: what a change is seen by is the stat alone, as for a file read long
    after it was written."""
    monkeypatch.setattr(cache_module, "RACY_NS", 0)


def test_an_edit_in_place_with_size_and_mtime_kept_is_read_again(data, caplog, trusted_stat):
    """``touch -r``: an edit that keeps the size and puts the mtime back still moves the ctime."""
    c, cache = data
    path = Path(c.path)
    cached_series(c, cache)
    st = path.stat()
    path.write_text(path.read_text().replace("AAA", "AAB"))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    caplog.set_level(logging.INFO, logger="kronos_exp")
    after = cached_series(c, cache)
    assert HIT not in caplog.text and "holds other bytes than the ones cached" in caplog.text
    assert [s.name for s in after] == ["AAB", "BBB"]
    assert {s.source_sha256 for s in after} == {file_sha256(path)}  # the fingerprint names the new bytes
    assert build_datasets(c, cache_dir=cache).file_digests == [file_sha256(path)]
    caplog.clear()
    _assert_same(cached_series(c, cache), after)
    assert HIT in caplog.text and len(_entries(cache)) == 1


def test_the_same_bytes_with_a_new_stat_hit_and_renew_the_record(data, caplog, trusted_stat):
    """A file touched, or copied over itself (a new inode), is hashed again: its bytes are the ones
    cached, so the entry serves, and records the new stat so that the next hit need not hash it."""
    c, cache = data
    path = Path(c.path)
    want = cached_series(c, cache)
    (entry,) = _entries(cache)
    copy = path.with_name("copy.tmp")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)
    caplog.set_level(logging.INFO, logger="kronos_exp")
    _assert_same(cached_series(c, cache), want)
    assert HIT in caplog.text and _entries(cache) == [entry]
    (record,) = json.loads((entry / "manifest.json").read_text())["files"]
    st = path.stat()
    assert (record["ino"], record["ctime_ns"], record["mtime_ns"], record["racy"]) == (
        st.st_ino, st.st_ctime_ns, st.st_mtime_ns, False)
    assert sorted(p.name for p in entry.iterdir()) == ["manifest.json", "timestamps.npy", "values.npy"]


def _swap_high_low(values: np.ndarray) -> None:
    values[11, 1], values[11, 2] = values[11, 2], values[11, 1]


def test_inconsistent_bars_are_refused_where_the_reader_refused_them(data, caplog):
    c, cache = data
    c = dataclasses.replace(c, nan_policy="drop")  # every bar kept was checked (none forward-filled)
    want = cached_series(c, cache)
    (entry,) = _entries(cache)
    _edit_values(entry, _swap_high_low)
    caplog.set_level(logging.INFO, logger="kronos_exp")
    _assert_same(cached_series(c, cache), want)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"the cache {entry} is damaged" in warnings[0]
    assert "high" in warnings[0] and "below low" in warnings[0]


@pytest.mark.parametrize("rows, nan_policy", [
    # a high forward-filled from a bar below the next one: high < low, as the reader returns it
    (["2024-01-01 00:00,90,95,89,90,1", "2024-01-01 00:05,99,,99,99,1"], "ffill"),
    # a close above the high by float rounding (within the reader's tolerance), beyond it in float32
    (["2024-01-01 00:00,8.03,8.03,7.9,8.030008029,1"], "drop"),
])
def test_an_entry_of_what_the_reader_accepts_passes_the_checks(tmp_path, caplog, rows, nan_policy):
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(["timestamps,open,high,low,close,volume", *rows, "2024-01-01 00:10,100,101,99,100,1"]))
    _age(path)
    c = DataConfig(path=str(path), nan_policy=nan_policy)
    want = cached_series(c, tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="kronos_exp")
    _assert_same(cached_series(c, tmp_path / "cache"), want)
    assert HIT in caplog.text and "damaged" not in caplog.text


def _truncate(entry: Path) -> None:
    values = entry / "values.npy"
    values.write_bytes(values.read_bytes()[:-100])


def _bad_json(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"format": 1, "key": ')


def _other_key(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    (entry / "manifest.json").write_text(json.dumps({**manifest, "key": "0" * 32}))


def _fewer_rows(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["series"][0]["rows"] -= 1
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _no_array(entry: Path) -> None:
    (entry / "timestamps.npy").unlink()


def _edit_values(entry: Path, change, record: bool = True) -> None:
    """values.npy edited by ``change`` (same shape and type); ``record``: its new sha256 written in
    the manifest too, as anyone who can write the cache can, so that only the data checks remain."""
    path = entry / "values.npy"
    values = np.load(path)
    change(values)
    np.save(path, values)
    if record:
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["arrays"]["values"]["sha256"] = file_sha256(path)
        (entry / "manifest.json").write_text(json.dumps(manifest))


def _poisoned_values(entry: Path) -> None:
    _edit_values(entry, lambda v: v.__imul__(2), record=False)  # still valid data, not what was read


def _nan_price(entry: Path) -> None:
    _edit_values(entry, lambda v: v.__setitem__((5, 3), np.nan))


def _negative_price(entry: Path) -> None:
    _edit_values(entry, lambda v: v.__setitem__((7, 3), -v[7, 3]))


def _negative_volume(entry: Path) -> None:
    _edit_values(entry, lambda v: v.__setitem__((9, 4), -1.0))


def _forged_source_digest(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["series"][0]["source_sha256"] = "0" * 64
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _linked_array(entry: Path) -> None:
    """values.npy a link to the same bytes outside the entry: a link is followed to anything."""
    outside = entry.parent.parent / "elsewhere.npy"
    os.replace(entry / "values.npy", outside)
    os.symlink(outside, entry / "values.npy")


def _array_from_dev_zero(entry: Path) -> None:
    (entry / "values.npy").unlink()
    os.symlink("/dev/zero", entry / "values.npy")


def _manifest_from_dev_zero(entry: Path) -> None:
    """Read to its end, /dev/zero never ends (the cache before this fix read it until memory ran out)."""
    (entry / "manifest.json").unlink()
    os.symlink("/dev/zero", entry / "manifest.json")


def _fifo_array(entry: Path) -> None:
    """Opened for reading, a FIFO waits for a writer that never comes (it hung the load forever)."""
    (entry / "values.npy").unlink()
    os.mkfifo(entry / "values.npy")


def _fifo_manifest(entry: Path) -> None:
    (entry / "manifest.json").unlink()
    os.mkfifo(entry / "manifest.json")


def _array_outside(entry: Path) -> None:
    """A manifest naming an array by a path out of the entry."""
    os.replace(entry / "values.npy", entry.parent.parent / "values.npy")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["arrays"] = {"../../values" if k == "values" else k: v for k, v in manifest["arrays"].items()}
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.timeout(60)  # a FIFO hung the load: fail, not stall the suite
@pytest.mark.parametrize("damage", [
    _truncate, _bad_json, _other_key, _fewer_rows, _no_array, _poisoned_values, _nan_price, _negative_price,
    _negative_volume, _forged_source_digest, _linked_array, _array_from_dev_zero, _manifest_from_dev_zero,
    _fifo_array, _fifo_manifest, _array_outside])
def test_a_damaged_entry_is_rebuilt_with_a_warning(data, caplog, damage):
    c, cache = data
    want = cached_series(c, cache)
    (entry,) = _entries(cache)
    damage(entry)
    caplog.set_level(logging.INFO, logger="kronos_exp")
    _assert_same(cached_series(c, cache), want)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"the cache {entry} is damaged" in warnings[0].getMessage()
    assert "rebuilding it" in warnings[0].getMessage()
    caplog.clear()
    _assert_same(cached_series(c, cache), want)
    assert HIT in caplog.text and not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert _entries(cache) == [entry]  # rebuilt in place, nothing left beside it


def test_the_reader_warnings_are_said_again_on_a_hit(tmp_path, frame, caplog):
    gaps = frame(300)
    gaps.loc[5, "close"] = np.nan
    path = tmp_path / "gaps.csv"
    gaps.to_csv(path, index=False)
    _age(path)
    c = DataConfig(path=str(path))
    cached_series(c, tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="kronos_exp")
    cached_series(c, tmp_path / "cache")
    assert HIT in caplog.text
    assert any(r.levelno == logging.WARNING and "row(s) with missing values" in r.getMessage() for r in caplog.records)


def test_cache_false_and_no_folder_read_the_files(data, caplog):
    c, cache = data
    build_datasets(dataclasses.replace(c, cache=False), cache_dir=cache)
    build_datasets(c)
    assert not cache.exists()


def test_a_crashed_writer_leaves_no_entry(data, caplog):
    """What a writer leaves before its rename is a temporary folder, never read as an entry."""
    c, cache = data
    cached_series(c, cache)
    (entry,) = _entries(cache)
    leftover = cache / f".tmp-{entry.name}-1-dead"
    os.rename(entry, leftover)
    _truncate(leftover)
    os.utime(leftover, (0, 0))  # hours old: swept by the next writer
    caplog.set_level(logging.INFO, logger="kronos_exp")
    cached_series(c, cache)
    assert HIT not in caplog.text and "damaged" not in caplog.text
    assert _entries(cache) == [entry]


def _load_in_child(args) -> list[str]:
    path, cache = args
    return [s.source_sha256 for s in cached_series(DataConfig(path=path, symbol_column="symbol"), Path(cache))]


def test_writers_at_the_same_time_leave_one_whole_entry(data):
    c, cache = data
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        digests = pool.map(_load_in_child, [(c.path, str(cache))] * 3)
    assert len({tuple(d) for d in digests}) == 1
    (entry,) = _entries(cache)  # no temporary or trash folders left either
    _assert_same(cached_series(c, cache), load_series(c))
