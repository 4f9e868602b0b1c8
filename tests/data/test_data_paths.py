"""A path names that path: a file whose name looks like a glob is that file, and what is not a
regular file (a FIFO, a dangling or looping symlink) is refused in one line naming it, never read
(a FIFO would hang the read) or skipped."""
import os
from pathlib import Path

import pytest

from kronos_exp.data import DataConfig, DataError, resolve_paths


def test_a_file_named_like_a_glob_is_that_file(write_csv, frame):
    exact = write_csv("p[1].csv", frame(10, seed=1))
    write_csv("p1.csv", frame(12, seed=2))  # what the pattern p[1].csv would match
    assert resolve_paths(DataConfig(path=exact)) == [Path(exact)]
    assert resolve_paths(DataConfig(paths=[exact])) == [Path(exact)]


def test_a_glob_is_used_when_nothing_has_that_name(write_csv, frame, tmp_path):
    p1 = write_csv("p1.csv", frame(12, seed=2))
    assert resolve_paths(DataConfig(path=str(tmp_path / "p[1].csv"))) == [Path(p1)]


@pytest.mark.parametrize("where", ["path", "folder", "glob"])
def test_a_fifo_is_refused_naming_it(write_csv, frame, tmp_path, where):
    write_csv("d/good.csv", frame(10))
    fifo = tmp_path / "d" / "pipe.csv"
    os.mkfifo(fifo)
    path = {"path": str(fifo), "folder": str(tmp_path / "d"), "glob": str(tmp_path / "d" / "*.csv")}[where]
    with pytest.raises(DataError, match=rf"{fifo} is not a regular file \(a FIFO\)"):
        resolve_paths(DataConfig(path=path))


@pytest.mark.parametrize("target", ["nowhere.csv", "loop.csv"])
def test_a_dangling_or_looping_symlink_in_a_folder_is_refused_naming_it(write_csv, frame, tmp_path, target):
    write_csv("d/good.csv", frame(10))
    link = tmp_path / "d" / "loop.csv" if target == "loop.csv" else tmp_path / "d" / "bad.csv"
    link.symlink_to(tmp_path / "d" / target)
    reason = "a symlink that loops" if target == "loop.csv" else "a symlink to nothing"
    with pytest.raises(DataError, match=rf"{link} is {reason}"):
        resolve_paths(DataConfig(path=str(tmp_path / "d")))


def test_a_symlink_to_a_regular_file_is_read(write_csv, frame, tmp_path):
    real = write_csv("real.csv", frame(10))
    (tmp_path / "link.csv").symlink_to(real)
    assert resolve_paths(DataConfig(path=str(tmp_path / "link.csv"))) == [Path(real)]
