"""A new local MLflow store starts as a copy of an empty, fully migrated one, when that one can be trusted.

MLflow builds a new SQLite store by running its Alembic migrations one by one (about 70 with MLflow
3.17: a few seconds), so every run in a new output folder paid that. The first new store on a machine also
leaves an empty migrated copy in the user cache (``$XDG_CACHE_HOME/kronos_exp``, else
``~/.cache/kronos_exp``), one per MLflow version and set of migrations; later new stores copy it in
milliseconds and MLflow opens them as it opens any store at the current schema.

Whatever is in that file ends up in every new store, so it is used only when nobody else can have
written it (the file and its folder are this user's and not writable by group or others) and the copy
holds nothing an empty store would not (MLflow's schema version, no rows, no trigger or view MLflow's
migrations do not create). The copy is what is checked, so a file swapped in after the checks is never
used. Otherwise a one-line warning names the template and MLflow creates the store itself; a template
of this user's that is merely stale or damaged is rebuilt.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import shutil
import sqlite3
import stat
from pathlib import Path

import mlflow

log = logging.getLogger(__name__)

# The rows MLflow's own migrations put in a new store; any other row was put there by something else.
_SEEDED_ROWS = {"alembic_version": "1", "workspaces": "name = 'default'"}
_PRIVATE = "a template must be a regular file you own, in a folder you own, neither writable by group or others"


def _migrations() -> list[Path]:
    versions = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    return sorted(versions.glob("*.py")) if versions.is_dir() else []


def template_path() -> Path:
    """Where the empty store for the installed MLflow is kept: its name says the MLflow version
    and the migrations it holds, so an upgrade (or a patched MLflow) builds a new one."""
    names = [p.name for p in _migrations()]
    key = hashlib.sha256("\n".join([mlflow.__version__, *names]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kronos_exp" / f"mlflow-{mlflow.__version__}-{key}-empty.db"


def _partial(path: Path) -> Path:
    """A name beside ``path`` that no other process uses; the file, made by whoever writes it,
    gets the usual permissions (as the store MLflow creates does)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")


def _build(template: Path) -> None:
    """MLflow's own table creation and migrations, on a file beside ``template`` then renamed, so
    processes building it at once each leave a whole file, writable by this user only."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    partial = _partial(template)
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        partial.chmod(0o600)
        os.replace(partial, template)
    finally:
        partial.unlink(missing_ok=True)


def _others_can_write(st: os.stat_result, what: str) -> str | None:
    """Why another user may have written a file or folder with this status, or None."""
    if st.st_uid != os.getuid():
        return f"{what} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others ({stat.filemode(st.st_mode)})"
    return None


def _copy_private(template: Path, partial: Path) -> str | None:
    """Copy ``template`` to ``partial`` (building it first when missing), or say why nobody but this
    user can be trusted to have written it. The file is checked once open, so it is the one copied."""
    folder = template.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        return f"its folder {folder} is a symlink, not a folder"
    if problem := _others_can_write(st, f"its folder {folder}"):
        return problem
    if not os.path.lexists(template):
        _build(template)
    try:  # O_NONBLOCK: a FIFO put there is reported, not waited on
        fd = os.open(template, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "it is a symlink"
        raise
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "it is not a regular file"
        if problem := _others_can_write(st, "it"):
            return problem
        with partial.open("xb") as copy:
            shutil.copyfileobj(source, copy)
    return None


def _contents_problem(db: sqlite3.Connection) -> str | None:
    """Why ``db`` is not the empty store MLflow's migrations build, or None."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    versions = [v for (v,) in db.execute("SELECT version_num FROM alembic_version")]
    if versions != [head]:
        return f"its schema version is {versions}, where MLflow {mlflow.__version__} creates ['{head}']"
    migrations = "\n".join(p.read_text(errors="replace") for p in _migrations())
    for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN ('trigger', 'view')"):
        if not sql or sql not in migrations:
            return f"it has a {kind} {name!r}, which MLflow's migrations do not create"
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        allowed = _SEEDED_ROWS.get(table, "0")
        quoted = table.replace('"', '""')
        if db.execute(f'SELECT EXISTS (SELECT 1 FROM "{quoted}" WHERE NOT ({allowed}))').fetchone()[0]:
            return f"it has rows in table {table!r}, where a new MLflow store has none"
    return None


def _stale(copy: Path) -> str | None:
    """Why the copied template is not an empty store at MLflow's schema, or None."""
    try:
        with contextlib.closing(sqlite3.connect(copy)) as db:
            return _contents_problem(db)
    except sqlite3.Error as err:
        return f"it is not a readable MLflow store ({err})"


def seed_new_store(database: Path) -> None:
    """Give ``database``, when it does not exist yet, the empty migrated store to start from.
    The caller holds the store's init lock, so no other process creates ``database`` meanwhile."""
    if database.exists():
        return
    template = template_path()
    partial = _partial(database)
    try:
        if untrusted := _copy_private(template, partial):
            log.warning("store template %s not used: %s; %s; MLflow creates %s itself", template, untrusted,
                        _PRIVATE, database)
        elif stale := _stale(partial):
            log.warning("store template %s not used: %s; it is rebuilt, and MLflow creates %s itself", template,
                        stale, database)
            _build(template)
        else:
            os.replace(partial, database)
    except Exception as err:  # any trouble with the cache: MLflow creates the store itself
        log.debug("no store template (%s); MLflow creates %s", err, database)
    finally:
        partial.unlink(missing_ok=True)
