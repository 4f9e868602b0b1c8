"""Which files a data config names, and what each series read from them is called.

`data.paths` (a list; entries may be globs) when non-empty, else `data.path` (a file, a glob or a
directory meaning its `*.csv`, `*.parquet`, `*.feather` and `*.arrow` files), else the bundled
sample. A name that exists is that file, even ``p[1].csv``; it is a glob only when nothing has that
name. Every file read must be a regular file: a FIFO or a dangling symlink is an error naming it.
Series names: the file stem (the path relative to the files' common folder when two stems clash);
with a symbol column, the symbol when one file is read and `stem:symbol` when several are.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from pathlib import Path
from typing import Any, Optional

from .checks import TABLE_SUFFIXES
from .config import DataConfig, DataError, validate_config

DATA_SUFFIXES = (".csv",) + TABLE_SUFFIXES  # the files of a directory that are read


def resolve_paths(settings: Any) -> list[Path]:
    """The data files `settings` refers to, sorted and de-duplicated.

    Raises DataError "no data file matches '<pattern>'" when a path or glob matches nothing.
    """
    c = settings if isinstance(settings, DataConfig) else validate_config(settings)
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
            folder = glob.escape(expanded)  # a folder named like a pattern is that folder too
            matches = [m for suffix in DATA_SUFFIXES for m in glob.glob(os.path.join(folder, "*" + suffix))]
        elif os.path.lexists(expanded) or not glob.has_magic(expanded):  # a name is that file, even p[1].csv
            matches = [expanded] if os.path.lexists(expanded) else []
        else:
            matches = [m for m in glob.glob(expanded, recursive=True) if not os.path.isdir(m)]
        if not matches:
            where = f" (relative to {os.getcwd()})" if not os.path.isabs(expanded) else ""
            raise DataError(f"no data file matches {str(pattern)!r}{where}; set data.path to a file (CSV, Parquet, "
                            "Feather/Arrow), a glob or a directory")
        for m in matches:
            _check_regular(m)
        found.update(Path(m).resolve() for m in matches)
    return sorted(found)


def _check_regular(path: str) -> None:
    """A data file must be a regular file (or a symlink to one): a FIFO would block the read
    forever, and a symlink to nothing is a mistake to say, not a file to skip."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if os.path.islink(path):
            reason = "a symlink that loops" if err.errno == errno.ELOOP else "a symlink to nothing"
            raise DataError(f"data file {path} is {reason} ({os.readlink(path)}); fix or remove it") from None
        raise DataError(f"cannot read data file {path} ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device"}.get(stat.S_IFMT(mode), "not a file")
        raise DataError(f"data file {path} is not a regular file ({kind}); data.path must name CSV, Parquet or "
                        "Feather/Arrow files, or a folder of them")


def series_stems(paths: list[Path]) -> list[str]:
    """One name per file: its stem, or its path relative to the files' common folder when two
    files in different folders share a stem."""
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):
        root = os.path.commonpath([str(p.parent) for p in paths])
        stems = [str(Path(os.path.relpath(p, root)).with_suffix("")) for p in paths]
    return stems


def series_name(stem: str, symbol: Optional[str], n_files: int) -> str:
    """A series' name: the stem; with a symbol, the symbol (one file) or `stem:symbol`."""
    if symbol is None:
        return stem
    return symbol if n_files == 1 else f"{stem}:{symbol}"
