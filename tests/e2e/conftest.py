"""End-to-end helpers: servers (``serve``) and a single-node SLURM (``slurm``); the ``cli`` fixture
(the real CLI in a subprocess) is in tests/conftest.py."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from harness import LEAN_SERVER


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
        # One worker for a test's server (MLflow starts 4, each importing MLflow: ~4 s more per start), and
        # no job runner (MLflow's GenAI jobs: a process importing MLflow, ~1 s more); `mlflow ui` keeps its
        # defaults, as the manual runs it.
        workers = ["--workers", "1"] if args[0] == "server" else []
        if args[0] == "server":
            env = {**env, **LEAN_SERVER}
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
                time.sleep(0.1)
        raise AssertionError(f"{args} did not come up on {url}")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on 127.0.0.1 (tests/e2e/postgres_cluster.py) for the session, its role
    logging in with a password; ``postgres.database(name)`` makes a fresh database and returns its
    URL. Skipped, saying why, where the server's programs or psycopg are missing (.ci/run installs
    the package, ``.[postgres]`` the driver)."""
    from postgres_cluster import PostgresCluster, missing

    # Not under pytest's tmp folders (mode 700): as root the server runs as user postgres and must reach it.
    yield from _throwaway(PostgresCluster, missing(), "PostgreSQL", "kronos-pg-")


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM (tests/e2e/slurm_cluster.py) for the session; skipped, saying why,
    where slurm-wlm and munge are not installed (.ci/run installs them)."""
    from slurm_cluster import SlurmCluster, missing

    # Not under pytest's tmp folders (mode 700): munged runs as user munge and must reach its socket.
    yield from _throwaway(SlurmCluster, missing(), "single-node SLURM", "kronos-slurm-", mode=0o755)


def _throwaway(cluster_class, why_not: str | None, what: str, prefix: str, mode: int | None = None):
    """A cluster started in a new folder for the session, stopped and removed at its end; skipped,
    saying why, where it cannot be had."""
    if why_not:
        pytest.skip(f"no {what} here: {why_not}")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if mode is not None:
        root.chmod(mode)
    cluster = cluster_class(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
