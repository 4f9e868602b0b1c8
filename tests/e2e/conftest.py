"""End-to-end helpers: run the real CLI in a subprocess against a SQLite MLflow store in tmp_path."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

# Small enough that one run of both phases takes seconds, big enough that losses fall.
FAST = [
    "data.max_train_windows=384",
    "data.max_eval_windows=96",
    "tokenizer.epochs=2",
    "predictor.epochs=2",
]


@dataclass
class Cli:
    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KRONOS_EXP_"))}
        env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        return env

    def command(self, *overrides: str, fast: bool = True) -> list[str]:
        return [sys.executable, "-m", "kronos_exp", *(FAST if fast else []), *overrides,
                f"mlflow.tracking_uri={self.tracking_uri}"]

    def run(self, *overrides: str, fast: bool = True, check: bool = True, timeout: int = 300):
        proc = subprocess.run(self.command(*overrides, fast=fast), cwd=self.root, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}")
        return proc

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def runs(self, experiment: str = "kronos_exp"):
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])

    def versions(self, name: str):
        return sorted(self.client().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory) -> Cli:
    return Cli(tmp_path_factory.mktemp("store"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve():
    """Start ``mlflow <args>`` (``ui ...``, ``server ...``) on a free loopback port; returns its URL.
    Every server started is stopped at the end of the test."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], cwd: Path, env: dict[str, str]) -> str:
        port = _free_port()
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        # One worker for a test's server (MLflow starts 4, each importing MLflow: ~4 s more per start);
        # `mlflow ui` keeps its defaults, as the README runs it.
        workers = ["--workers", "1"] if args[0] == "server" else []
        proc = subprocess.Popen([mlflow, *args, *workers, "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                return url
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{args} did not come up on {url}")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM (tests/e2e/slurm_cluster.py) for the session; skipped, saying why,
    where slurm-wlm and munge are not installed (.ci/run installs them)."""
    from slurm_cluster import SlurmCluster, missing

    why = missing()
    if why:
        pytest.skip(f"no single-node SLURM here: {why}")
    # Not under pytest's tmp folders (mode 700): munged runs as user munge and must reach its socket.
    root = Path(tempfile.mkdtemp(prefix="kronos-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
