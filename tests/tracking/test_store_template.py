"""A new local store is copied from an empty migrated one instead of migrated afresh: the copy is
the store MLflow builds itself, and the second new store on a machine runs no migration."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from mlflow.tracking import MlflowClient

from kronos_exp.tracking import Tracker

_OPEN_STORE = "import sys; from kronos_exp.tracking import Tracker; Tracker(sys.argv[1], 'kronos_exp')"


def _schema(database) -> tuple[set, list]:
    """Tables and indexes with their definitions (lines sorted: MLflow's migrations order a table's
    constraints differently from one build to the next), and the schema revision."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        tables = {(kind, name, tuple(sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())))
                  for kind, name, sql in rows}
        return tables, db.execute("SELECT version_num FROM alembic_version").fetchall()


def test_new_stores_start_from_the_migrated_template(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second, own = (tmp_path / name / "mlflow.db" for name in ("first", "second", "own"))
    Tracker(f"sqlite:///{first}", "kronos_exp")  # builds the template, then copies it
    assert list((tmp_path / "cache" / "kronos_exp").glob("mlflow-*-empty.db"))

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", _OPEN_STORE, f"sqlite:///{second}"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Creating initial MLflow database tables" not in proc.stderr  # copied, not migrated
    assert "Updating database tables" not in proc.stderr

    own.parent.mkdir()
    MlflowClient(f"sqlite:///{own}").search_experiments()  # MLflow builds this one itself
    assert _schema(second) == _schema(own)
    assert os.stat(second).st_mode == os.stat(own).st_mode
    client = MlflowClient(f"sqlite:///{second}")
    default = client.get_experiment("0")  # the store's own Default experiment, not the template's
    assert default.artifact_location == MlflowClient(f"sqlite:///{own}").get_experiment("0").artifact_location
    kronos = client.get_experiment_by_name("kronos_exp")
    assert kronos.artifact_location == (second.parent / "mlartifacts").resolve().as_uri()
    client.create_run(kronos.experiment_id)
    assert len(client.search_runs([kronos.experiment_id])) == 1


def test_an_unusable_cache_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    tracker = Tracker(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", "kronos_exp")
    tracker.client.create_run(tracker.experiment_id)
    assert not list((tmp_path / "store").glob(".mlflow.db.*"))  # no partial copy left behind
