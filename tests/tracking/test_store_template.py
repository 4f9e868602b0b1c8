"""A new local store is copied from an empty migrated one instead of migrated afresh: the copy is
the store MLflow builds itself, the second new store on a machine runs no migration, and a template
that someone else could have written, or that holds anything an empty store would not, is not used."""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest
from mlflow.tracking import MlflowClient

from kronos_exp.tracking import Tracker
from kronos_exp.tracking.store_template import seed_new_store, template_path

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


# A new store must not inherit what someone put in the template: it is used only when nobody else can
# have written it and its copy holds nothing an empty store would not; otherwise a warning names it.
_PLANTED_MODEL = ("INSERT INTO registered_models (name, creation_time, last_updated_time, description) "
                  "VALUES ('tokenizer', 0, 0, 'trained on other data')")
# In experiment 1: the first one the new store creates (kronos_exp).
_PLANTED_RUN = ("INSERT INTO runs (run_uuid, name, source_type, user_id, status, start_time, lifecycle_stage, "
                "artifact_uri, experiment_id) VALUES ('0123456789abcdef0123456789abcdef', 'planted', 'LOCAL', "
                "'someone', 'FINISHED', 0, 'active', '', 1)")
_PLANTED_TRIGGER = ("CREATE TRIGGER planted AFTER INSERT ON latest_metrics BEGIN UPDATE latest_metrics "
                    "SET value = 0.000123 WHERE key = 'best_val_loss'; END")


@pytest.fixture(scope="module")
def good_template(tmp_path_factory) -> bytes:
    """The bytes of a template this code builds (MLflow's own migrations), to plant things in."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        seed_new_store(cache / "seeded.db")
        return template_path().read_bytes()


def _plant(tmp_path, monkeypatch, good: bytes, sql: str | None, folder_mode: int = 0o700):
    """The template a new store would be copied from, with ``sql`` run on it, in a folder of ``folder_mode``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = template_path()
    template.parent.mkdir(parents=True)
    template.write_bytes(good)
    if sql:
        with closing(sqlite3.connect(template)) as db, db:
            db.execute(sql)
    template.chmod(0o600)
    template.parent.chmod(folder_mode)
    return template


def _new_store(tmp_path, caplog) -> tuple[MlflowClient, str, list[str]]:
    """A new store opened as a run opens it: its client, kronos_exp's id, and the template's warnings."""
    with caplog.at_level(logging.WARNING, logger="kronos_exp.tracking.store_template"):
        tracker = Tracker(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", "kronos_exp")
    warnings = [r.getMessage() for r in caplog.records if r.name == "kronos_exp.tracking.store_template"]
    return tracker.client, tracker.experiment_id, warnings


def _triggers(database) -> list[str]:
    with closing(sqlite3.connect(database)) as db:
        return [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]


def test_a_template_in_a_folder_others_can_write_is_not_used(tmp_path, monkeypatch, caplog, good_template):
    template = _plant(tmp_path, monkeypatch, good_template, _PLANTED_MODEL, folder_mode=0o777)
    client, _, warnings = _new_store(tmp_path, caplog)
    assert client.search_registered_models() == []
    assert len(warnings) == 1 and str(template) in warnings[0] and "writable by group or others" in warnings[0]
    with closing(sqlite3.connect(template)) as db:  # someone else's file: left as it is, not rebuilt
        assert db.execute("SELECT name FROM registered_models").fetchall() == [("tokenizer",)]


@pytest.mark.parametrize("planted", [_PLANTED_MODEL, _PLANTED_RUN], ids=["registered_model", "run"])
def test_a_template_holding_rows_is_not_used(tmp_path, monkeypatch, caplog, good_template, planted):
    template = _plant(tmp_path, monkeypatch, good_template, planted)
    client, experiment_id, warnings = _new_store(tmp_path, caplog)
    assert client.search_registered_models() == []
    assert client.search_runs(["0", experiment_id]) == []
    assert len(warnings) == 1 and str(template) in warnings[0] and "rows in table" in warnings[0]


def test_a_template_with_a_trigger_of_its_own_is_not_used(tmp_path, monkeypatch, caplog, good_template):
    template = _plant(tmp_path, monkeypatch, good_template, _PLANTED_TRIGGER)
    client, experiment_id, warnings = _new_store(tmp_path, caplog)
    assert "planted" not in _triggers(tmp_path / "store" / "mlflow.db")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "best_val_loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics["best_val_loss"] == 0.5
    assert len(warnings) == 1 and str(template) in warnings[0] and "trigger 'planted'" in warnings[0]
    assert "planted" not in _triggers(template)  # this user's own template: rebuilt


def test_a_template_at_another_schema_version_is_not_used_and_is_rebuilt(tmp_path, monkeypatch, caplog,
                                                                         good_template):
    template = _plant(tmp_path, monkeypatch, good_template, "UPDATE alembic_version SET version_num = 'bogus'")
    client, experiment_id, warnings = _new_store(tmp_path, caplog)
    client.create_run(experiment_id)
    assert len(client.search_runs([experiment_id])) == 1
    assert len(warnings) == 1 and str(template) in warnings[0] and "['bogus']" in warnings[0]
    with closing(sqlite3.connect(template)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() != [("bogus",)]


def test_a_template_built_here_is_private_and_the_next_store_is_its_copy(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    umask = os.umask(0o002)  # a shared-group umask: what is created is group-writable unless made private
    try:
        Tracker(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}", "kronos_exp")
    finally:
        os.umask(umask)
    template = template_path()
    assert not os.lstat(template).st_mode & 0o022 and not os.lstat(template.parent).st_mode & 0o022
    with closing(sqlite3.connect(template)) as db:
        db.execute("PRAGMA user_version = 7")  # a harmless mark that only a copy of this file carries
    client, _, warnings = _new_store(tmp_path, caplog)
    assert warnings == []
    with closing(sqlite3.connect(tmp_path / "store" / "mlflow.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (7,)


def test_a_template_that_is_a_symlink_is_not_used(tmp_path, monkeypatch, caplog, good_template):
    elsewhere = _plant(tmp_path / "other", monkeypatch, good_template, _PLANTED_MODEL)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = template_path()
    template.parent.mkdir(mode=0o700, parents=True)
    template.symlink_to(elsewhere)
    client, _, warnings = _new_store(tmp_path, caplog)
    assert client.search_registered_models() == []
    assert len(warnings) == 1 and str(template) in warnings[0] and "symlink" in warnings[0]
