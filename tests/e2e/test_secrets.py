"""Secrets never leave the process (issue 27, item 7): a password in a database or server URL
(``hydra.sweeper.storage``, ``mlflow.tracking_uri``) is in no console line, error line, file under
the working folder (the jobs' .hydra/ files, multirun.yaml, log files, the stores) or MLflow
param, tag or artifact; and the Optuna storage reaches the jobs through the environment, never
through an override. The real CLI, a real MLflow server whose URL carries a login (it needs none,
and ignores it), and database URLs that cannot connect, for the error lines.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "s3cret"
TINY = ["data.max_train_windows=64", "data.max_eval_windows=16", "tokenizer.epochs=1", "predictor.epochs=1"]
SEARCH = ["hparams_search=optuna", *TINY, "hydra.sweeper.params=null", "predictor.lr=tag(log, interval(1e-4, 1e-2))",
          "hydra.sweeper.pruner=none"]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def _kronos(cli, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m kronos_exp`` in ``cli``'s folder with exactly ``overrides`` (its own tracking URI)."""
    return subprocess.run([sys.executable, "-m", "kronos_exp", *overrides], cwd=cli.root, env=cli.env(),
                          capture_output=True, text=True, timeout=300)


def _files_with(root: Path, text: str) -> list[str]:
    """Every file under ``root`` (text or binary: stores, checkpoints, logs) that holds ``text``."""
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and text.encode() in p.read_bytes()]


def test_a_storage_password_is_masked_in_the_error_line(cli):
    proc = _kronos(cli, *SEARCH, f"mlflow.tracking_uri={cli.tracking_uri}",
                   f"hydra.sweeper.storage=postgresql://user:{SECRET}@127.0.0.1:1/db")
    assert proc.returncode != 0
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: hydra.sweeper.storage=postgresql://user:***@127.0.0.1:1/db: cannot open it"), error
    assert SECRET not in proc.stdout + proc.stderr
    assert _files_with(cli.root, SECRET) == []


def test_a_tracking_database_password_is_masked_in_the_error_line_and_the_saved_config(cli):
    proc = _kronos(cli, *TINY, f"mlflow.tracking_uri=postgresql://user:{SECRET}@127.0.0.1:1/mlflow")
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot open the MLflow store at mlflow.tracking_uri="
                            "postgresql://user:***@127.0.0.1:1/mlflow ("), error
    assert "Traceback" not in proc.stderr  # Hydra's line above a traceback repeats the overrides as given
    assert SECRET not in proc.stdout + proc.stderr
    assert _files_with(cli.root, SECRET) == []
    saved = next(cli.root.glob("outputs/runs/*/*/.hydra/config.yaml")).read_text()
    assert "tracking_uri: postgresql://user:***@127.0.0.1:1/mlflow" in saved


def _run_texts(client: MlflowClient, run, folder: Path) -> str:
    """A run's params, tags and every artifact's bytes (downloaded into ``folder``), as one text."""
    local = Path(client.download_artifacts(run.info.run_id, "", str(folder)))
    artifacts = b"".join(p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file())
    return " ".join([*run.data.params.values(), *run.data.tags.values(), artifacts.decode(errors="replace")])


def _sweep_keeps_the_secret(cli, serve, tmp_path, *overrides: str) -> tuple[str, str]:
    """Run a sweep against a server whose URL carries a login; check that the password is nowhere
    and the URL is shown masked. Returns the server's URL and the sweep's output."""
    server = cli.root / "server"
    url = serve(["server", "--backend-store-uri", f"sqlite:///{server / 'mlflow.db'}", "--artifacts-destination",
                 str(server / "artifacts")], cli.root, cli.env())
    masked = url.replace("http://", "http://user:***@")
    proc = _kronos(cli, *overrides, f"mlflow.tracking_uri={url.replace('http://', f'http://user:{SECRET}@')}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert SECRET not in output
    assert f"mlflow   {masked}" in output  # the run banner: masked, not dropped
    assert _files_with(cli.root, SECRET) == []  # outputs/ (.hydra/, multirun.yaml, logs) and the server's store
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id])
    for i, run in enumerate(runs):
        assert SECRET not in _run_texts(client, run, tmp_path / str(i)), run.info.run_name
    jobs = [r for r in runs if "job_num" in r.data.tags]
    assert jobs and all(r.data.params["mlflow.tracking_uri"] == masked for r in jobs)
    return url, output


def test_a_grid_sweep_with_a_login_in_its_tracking_uri_leaves_the_password_nowhere(cli, serve, tmp_path):
    _sweep_keeps_the_secret(cli, serve, tmp_path, "-m", *TINY, "predictor.lr=1e-3")
    assert list(cli.root.glob("outputs/multirun/*/*/multirun.yaml"))  # (checked above, with every file)


def test_a_search_in_parallel_processes_gets_its_storage_through_the_environment(cli, serve, tmp_path):
    """joblib's workers, as submitit's and SLURM's jobs, inherit the sweeping process's environment."""
    url, output = _sweep_keeps_the_secret(cli, serve, tmp_path, *SEARCH, "hydra/launcher=parallel",
                                          "hydra.sweeper.n_trials=1")
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id])
    job = next(r for r in runs if "job_num" in r.data.tags)
    assert job.data.tags["optuna_trial"] == "0"  # the job found its trial, and the study, in its environment
    # The study's storage (SQLite beside the MLflow store: outputs/optuna.db) is in no job's override or file.
    saved = list(cli.root.glob("outputs/multirun/*/*/**/*.yaml"))
    assert any(p.name == "hydra.yaml" for p in saved)
    for path in saved:
        assert "optuna.db" not in path.read_text() and "TRIAL_STORAGE" not in path.read_text(), path
    assert "TRIAL_STORAGE" not in output
