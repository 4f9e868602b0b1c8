"""A team's real database (issue 28, item 4): the manual's team setup (docs/clusters.md, "One
tracking server for the team") on a real PostgreSQL that the ``postgres`` fixture starts on
127.0.0.1 (its role logs in with a password): ``mlflow server`` on a PostgreSQL backend serving the
artifacts, the Optuna study in PostgreSQL, two search processes in two working folders with their
own ``HOME`` (two hosts) sharing one study, and a search process killed during a trial whose slot a
newcomer takes. The password, given in the URLs or in ``~/.pgpass``, is in no output line, file,
MLflow param, tag or artifact, nor in any row of either database.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

TINY = ["data.max_train_windows=64", "data.max_eval_windows=16", "tokenizer.epochs=1", "predictor.epochs=1"]
# The manual's search (docs/clusters.md, team setup): the predictor's learning rate, the tokenizer fixed (trained once).
SEARCH = ["hparams_search=optuna", "hydra.sweeper.params=null", "predictor.lr=tag(log, interval(1e-4, 1e-2))",
          "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=team-lr"]
FINISHED = ("COMPLETE", "PRUNED")


def _host(root: Path, env: dict[str, str]) -> dict[str, str]:
    """A working folder of its own and ``HOME`` there: another host (the key folder, XDG_CONFIG_HOME,
    stays shared, as on a cluster's shared home)."""
    root.mkdir()
    return {**env, "HOME": str(root), "OMP_NUM_THREADS": "1"}


def _pgpass(home: Path, postgres) -> None:
    """``~/.pgpass``, where libpq finds the password of a URL that gives none."""
    pgpass = home / ".pgpass"
    pgpass.write_text(f"{postgres.host}:{postgres.port}:*:{postgres.user}:{postgres.password}\n")
    pgpass.chmod(0o600)


def _kronos(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "kronos_exp", *overrides]


def _server(serve, backend: str, artifacts: Path, cwd: Path, env: dict[str, str]) -> str:
    """The manual's ``mlflow server`` for the team (docs/clusters.md): a PostgreSQL backend, the
    server serving artifacts."""
    return serve(["server", "--backend-store-uri", backend, "--artifacts-destination", str(artifacts)],
                 cwd=cwd, env=env)


def _files_with(root: Path, text: str) -> list[str]:
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and text.encode() in p.read_bytes()]


def _mlflow_with(client: MlflowClient, text: str) -> list[str]:
    """Where ``text`` is in the server's experiments, runs (names, params, tags) and registry."""
    from mlflow.entities import ViewType

    found = []
    experiments = client.search_experiments(view_type=ViewType.ALL)
    for exp in experiments:
        found += [f"experiment {exp.name}: tag {k}" for k, v in exp.tags.items() if text in f"{k}={v}"]
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            fields = {"run name": run.info.run_name, **{f"param {k}": f"{k}={v}" for k, v in run.data.params.items()},
                      **{f"tag {k}": f"{k}={v}" for k, v in run.data.tags.items()}}
            found += [f"run {run.info.run_id}: {where}" for where, value in fields.items() if text in str(value)]
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            fields = {"source": version.source, "description": version.description or "",
                      **{f"tag {k}": f"{k}={v}" for k, v in version.tags.items()}}
            found += [f"{model.name} v{version.version}: {where}" for where, value in fields.items() if text in value]
    assert experiments, "no experiment on the server: the search found nothing to check"
    return found


def _rows_with(url: str, text: str) -> list[str]:
    """Every table of the database at ``url`` whose rows, as text, hold ``text``."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'")]
        assert tables, url
        return [table for table in tables
                if conn.execute(f"SELECT count(*) FROM {table} t WHERE strpos(t::text, %s) > 0", (text,)).fetchone()[0]]


def _tag_runs(client: MlflowClient, query: str):
    exp = client.get_experiment_by_name("kronos_exp")
    return client.search_runs([exp.experiment_id], query)


def test_a_run_on_a_postgresql_backed_mlflow_server(cli, serve, postgres, tmp_path):
    """The server logs in with the password of its ``~/.pgpass``; a run's checkpoints go up through it."""
    backend = postgres.database("server_mlflow").replace(f":{postgres.password}@", "@")  # no password in the URL
    server_home, artifacts = tmp_path / "server", tmp_path / "artifacts"
    server_env = _host(server_home, cli.env())
    _pgpass(server_home, postgres)
    url = _server(serve, backend, artifacts, server_home, server_env)
    work = tmp_path / "work"
    proc = subprocess.run(_kronos(f"mlflow.tracking_uri={url}", *TINY), cwd=work, env=_host(work, cli.env()),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id])
    assert sorted(r.data.tags.get("phase", "job") for r in runs) == ["job", "predictor", "tokenizer"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for name in ("kronos-tokenizer", "kronos-predictor"):
        [version] = client.search_model_versions(f"name = '{name}'")
        assert version.source.startswith("mlflow-artifacts:/"), version.source  # the server serves the artifacts
        served = Path(client.download_artifacts(version.run_id, "", str(tmp_path / name)))
        assert "model.safetensors" in {p.name for p in served.rglob("*")}, name
    stored = [p for p in artifacts.rglob("model.safetensors")]  # where the server keeps them
    assert len(stored) >= 2, stored
    assert postgres.password not in proc.stdout + proc.stderr
    assert _mlflow_with(client, postgres.password) == []


def _study(storage: str, name: str = "team-lr") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def test_a_search_joins_a_study_database_that_another_is_creating(postgres):
    """Two searches started together on a new database both create Optuna's tables: the one whose
    CREATE waits on the other's (not yet committed) must join the study once the other commits,
    not stop with "duplicate key value violates unique constraint" or "relation already exists"."""
    import psycopg
    import sqlalchemy
    from optuna.storages._rdb import models

    from kronos_exp.search.study import open_study

    url = postgres.database("racing_optuna")
    engine = sqlalchemy.create_engine(url)
    # The pool first: leaving the block closes ``other`` (its lock goes) before it waits for the joining thread.
    with ThreadPoolExecutor(1) as pool, engine.connect() as other, psycopg.connect(url, autocommit=True) as look:
        creating = other.begin()
        models.BaseModel.metadata.create_all(other)  # the other process, its tables created, not committed yet
        joining = pool.submit(open_study, "racing", url, ["minimize"])
        deadline = time.time() + 30
        while not look.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'racing_optuna' AND "
                               "wait_event_type = 'Lock'").fetchone()[0]:
            assert time.time() < deadline and not joining.done(), "the joining search never waited on the other"
            time.sleep(0.05)
        creating.commit()
        study = joining.result(timeout=60)
    engine.dispose()
    assert study.study_name == "racing" and [d.name for d in study.directions] == ["MINIMIZE"]


def test_registrations_stay_bounded_and_one_of_two_racing_joiners_inherits(postgres):
    """The statements that remove and rewrite a registration (kronos_exp/search/records.py) on
    PostgreSQL: of two processes joining at once, one inherits the ended search; a rerun folds the
    ended registrations into its own."""
    from kronos_exp.search.study import open_study
    from kronos_exp.search.workers import TRIAL_WORKER_ATTR, Worker

    url = postgres.database("bounded_optuna")
    study = open_study("bounded", url, ["minimize"])
    ended = Worker.join(study, 10, url)
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr(TRIAL_WORKER_ATTR, ended.id)
        study.tell(trial, 1.0)
    ended.leave()
    with ThreadPoolExecutor(2) as pool:
        joined = list(pool.map(lambda _: Worker.join(open_study("bounded", url, ["minimize"]), 10, url), range(2)))
    assert sorted(w.inherited for w in joined) == [0, 2]
    for worker in joined:
        worker.leave()
    rerun = Worker.join(study, 10, url)
    assert rerun.inherited == 2 and [k for k in study.user_attrs if k.startswith("kronos_")] == [
        f"kronos_worker:{rerun.id}"]
    rerun.leave()


def test_two_hosts_share_one_postgresql_study_and_train_the_tokenizer_once(cli, serve, postgres, tmp_path):
    """Both URLs carry the password (the form that puts it at risk): shown masked, stored nowhere."""
    mlflow_db, storage = postgres.database("team_mlflow"), postgres.database("team_optuna")
    secret = postgres.password
    assert secret in mlflow_db and secret in storage
    artifacts = tmp_path / "artifacts"
    url = _server(serve, mlflow_db, artifacts, tmp_path, cli.env())
    command = _kronos(*SEARCH, f"hydra.sweeper.storage={storage}", f"mlflow.tracking_uri={url}", *TINY)
    hosts = {name: tmp_path / name for name in ("a", "b")}
    procs = {name: subprocess.Popen(command, cwd=root, env=_host(root, cli.env()), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, root in hosts.items()}
    try:
        outputs = {name: p.communicate(timeout=400) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    assert [p.returncode for p in procs.values()] == [0, 0], {n: o[1][-3000:] for n, o in outputs.items()}

    trials = _study(storage).get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name in FINISHED for t in trials), [t.state.name for t in trials]
    assert len({t.params["predictor.lr"] for t in trials}) == 4
    assert len({t.user_attrs["kronos_worker"] for t in trials}) == 2  # two processes, two trials each
    client = MlflowClient(url)
    trained = _tag_runs(client, "tags.phase = 'tokenizer' and tags.skipped = 'false'")
    assert len(trained) == 1, [r.info.run_id for r in trained]
    assert len(client.search_model_versions("name = 'kronos-tokenizer'")) == 1
    jobs = [r for r in _tag_runs(client, "tags.optuna_study = 'team-lr'")]
    assert sorted(int(r.data.tags["optuna_trial"]) for r in jobs) == [0, 1, 2, 3]
    assert _tag_runs(client, "attributes.status = 'RUNNING'") == []

    # The password: shown as *** where the URLs are shown, and stored nowhere.
    text = "".join(out + err for out, err in outputs.values())
    assert ":***@127.0.0.1" in text  # the storage line of each search
    assert secret not in text
    for root in hosts.values():  # the jobs' saved configs and logs show the URLs, masked
        assert any(".hydra" in f for f in _files_with(root, f"{postgres.user}:***@")), root
        assert _files_with(root, secret) == []
    assert _files_with(artifacts, secret) == []
    assert _mlflow_with(client, secret) == []
    assert _rows_with(mlflow_db, secret) == [] and _rows_with(storage, secret) == []


def _states(url: str) -> list[str]:
    """The states of the trials in the database at ``url``, read without Optuna (which would create
    its tables, racing the search that creates them)."""
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            return [state for (state,) in conn.execute("SELECT state::text FROM trials ORDER BY number")]
        except psycopg.errors.UndefinedTable:  # the search has not created it yet
            return []


def test_a_killed_search_process_leaves_no_running_trial_and_a_newcomer_takes_its_slot(cli, postgres, tmp_path):
    """One host, the study in PostgreSQL (the password in ``~/.pgpass``), MLflow's local store: the
    first process is killed during its second trial; the next one fails that trial (its owner's pid
    is gone) and runs the one trial still owed: n_trials counts the dead process's finished trial."""
    ours = postgres.database("killed_optuna")  # this test reads the study with the password in its URL
    storage = ours.replace(f":{postgres.password}@", "@")
    env = _host(tmp_path / "host", cli.env())
    _pgpass(tmp_path / "host", postgres)
    command = _kronos("hparams_search=optuna", "phases=tokenizer", "hydra.sweeper.params=null",
                      "tokenizer.lr=tag(log, interval(1e-4, 1e-2))", "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.study_name=killed", "hydra.sweeper.pruner=none",
                      f"hydra.sweeper.storage={storage}", *TINY)
    log = tmp_path / "first.log"
    with log.open("w") as output:
        first = subprocess.Popen(command, cwd=tmp_path / "host", env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while True:
            assert time.time() < deadline, "the second trial never ran"
            assert first.poll() is None, log.read_text()[-3000:]
            if _states(ours) == ["COMPLETE", "RUNNING"]:
                break
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    newcomer = subprocess.run(command, cwd=tmp_path / "host", env=env, capture_output=True, text=True, timeout=300)
    assert newcomer.returncode == 0, newcomer.stderr[-3000:]
    out = newcomer.stdout + newcomer.stderr
    assert "Trials to run: 1 of n_trials=2" in out, out[-3000:]
    assert "trial 1 of study 'killed' was left running by dead worker" in out
    assert [t.state.name for t in _study(ours, "killed").get_trials(deepcopy=False)] == [
        "COMPLETE", "FAIL", "COMPLETE"]
    assert postgres.password not in out + log.read_text()
