"""Suite-wide settings and the fixtures that run the program (tests/harness.py has what they hand out).

- ``cli`` / ``module_cli``: the real CLI (``python -m kronos_exp``) in a subprocess against a SQLite
  store in a fresh folder, for what needs a process boundary (exit codes, signals, torchrun, SLURM,
  servers, several processes at once, the sweep launchers).
- ``pipeline`` / ``module_pipeline``: the same run in this process (compose + ``pipeline.run``):
  ``pipeline.run(*overrides)`` returns an Outcome (returncode, stdout, stderr, objective).
- ``trained_store``: one tiny ``phases=all`` run, trained once per session; read it, never write it.
- ``trained``: a copy of it in the test's folder, to add runs to (reuse, resume, eval, registry).
- ``read_only``, ``full_disk``, ``small_disk``: folders that cannot be written, or fill up (a tmpfs).
"""
import os
import subprocess
import tempfile

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The key that signs training states (kronos_exp/tracking/signatures.py): the suite's own, not the user's.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="kronos-test-config-")
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one torch thread each, not two
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from harness import Cli, Pipeline, TrainedStore  # noqa: E402

# The parity checkpoints and tiny random models (tests/parity_fixtures.py), for tests/model and tests/forecasting.
pytest_plugins = ["parity_fixtures"]


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory) -> Cli:
    return Cli(tmp_path_factory.mktemp("store"))


@pytest.fixture
def pipeline(tmp_path) -> Pipeline:
    return Pipeline(tmp_path)


@pytest.fixture(scope="module")
def module_pipeline(tmp_path_factory) -> Pipeline:
    return Pipeline(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> TrainedStore:
    """The session's trained store (TrainedStore.train): read-only; the session fails at its end if
    a test changed its database (use ``trained`` to add runs)."""
    store = TrainedStore.train(tmp_path_factory.mktemp("trained"))
    digest = store.digest()
    yield store
    assert store.digest() == digest, "a test wrote into trained_store (session-wide); use the `trained` copy"


@pytest.fixture
def trained(trained_store, tmp_path) -> TrainedStore:
    """A copy of the session's trained store in ``tmp_path/store`` (its own database and artifacts)."""
    return trained_store.copy(tmp_path / "store")


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored():
    """A test that points MLflow's fluent API at its store does not leave it pointing there."""
    import mlflow.tracking._tracking_service.utils as tracking_utils

    uri, env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if tracking_utils._tracking_uri != uri:
        tracking_utils.set_tracking_uri(uri)
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


# -- folders that cannot be written, or fill up --------------------------------------------------

def _mount_tmpfs(folder, options: str):
    """A small or read-only tmpfs (needs root; CI runners without it skip)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    return folder


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "read_only"
    if os.geteuid() != 0:  # permissions stop everyone but root
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    yield _mount_tmpfs(folder, "size=1M,ro")
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    folder = _mount_tmpfs(tmp_path / "full", "size=96k")  # room for Hydra's files, not for a checkpoint
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    folder = _mount_tmpfs(tmp_path / "small", "size=400k")  # room for the best checkpoint, not for the state
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def pytest_collection_modifyitems(items):
    """The SLURM tests first: the time-limit test waits on SLURM's clock for over a minute at one
    thread, so under pytest-xdist (``-n 2 --dist loadscope``) the other worker runs the rest meanwhile
    instead of idling after it."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)
