"""A new local MLflow store starts as a copy of an empty, fully migrated one.

MLflow builds a new SQLite store by running its Alembic migrations one by one (about 70 with MLflow
3.17: some 1.2 s of CPU, and a commit each), so every run in a new output folder paid that. The
first new store on a machine also leaves an empty migrated copy in the user cache
(``$XDG_CACHE_HOME/kronos_exp``, else ``~/.cache/kronos_exp``), one per MLflow version and set of
migrations; later new stores copy it in milliseconds and MLflow opens them as it opens any store at
the current schema (it still adds the store's own Default experiment). Where the cache cannot be
written or read, MLflow creates the store itself, as before.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

import mlflow

log = logging.getLogger(__name__)


def template_path() -> Path:
    """Where the empty store for the installed MLflow is kept: its name says the MLflow version
    and the migrations it holds, so an upgrade (or a patched MLflow) builds a new one."""
    migrations = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    names = sorted(p.name for p in migrations.glob("*.py")) if migrations.is_dir() else []
    key = hashlib.sha256("\n".join([mlflow.__version__, *names]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kronos_exp" / f"mlflow-{mlflow.__version__}-{key}-empty.db"


def _partial(path: Path) -> Path:
    """A name beside ``path`` that no other process uses; the file, made by whoever writes it,
    gets the usual permissions (as the store MLflow creates does)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")


def _build(template: Path) -> None:
    """MLflow's own table creation and migrations, on a file beside ``template`` then renamed, so
    processes building it at once each leave a whole file."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(template)
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(partial, template)
    finally:
        partial.unlink(missing_ok=True)


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def seed_new_store(database: Path) -> None:
    """Give ``database``, when it does not exist yet, the empty migrated store to start from.
    The caller holds the store's init lock, so no other process creates ``database`` meanwhile."""
    if database.exists():
        return
    try:
        template = template_path()
        if not _is_sqlite(template):
            _build(template)
        partial = _partial(database)
        try:
            shutil.copyfile(template, partial)
            os.replace(partial, database)
        finally:
            partial.unlink(missing_ok=True)
    except Exception as err:  # any trouble with the cache: MLflow creates the store itself
        log.debug("no store template (%s); MLflow creates %s", err, database)
