"""What the tests drive the program with: an MLflow store in a folder (``Store``), the pipeline run
in this process (``Pipeline``), the real CLI in a subprocess (``Cli``), and copies of a trained
store (``copy_store``). The fixtures that hand them out are in tests/conftest.py.

In-process runs compose the real config (``hydra.initialize_config_dir`` + ``compose``, as
lightning-hydra-template's tests do) and call ``kronos_exp.pipeline.run(cfg, output_dir)``, the
entry point ``python -m kronos_exp`` calls; what a run changes in the process (the working folder,
environment variables, MLflow's tracking URI and active run, logging, torch's threads, Hydra's
global state) is put back afterwards. A subprocess is for what needs a process boundary: exit
codes, signals, torchrun, SLURM, servers, several processes at once, the sweep launchers.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

PARITY = Path(__file__).resolve().parent / "fixtures" / "parity"  # tiny published-layout checkpoints

# What a test's `mlflow server` runs without: MLflow's job runner (its GenAI jobs, which nothing here
# uses: a process importing MLflow, about a second more per start on 2 cores).
LEAN_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

# Small enough that one run of both phases takes seconds, big enough that losses fall.
FAST = [
    "data.max_train_windows=384",
    "data.max_eval_windows=96",
    "tokenizer.epochs=2",
    "predictor.epochs=2",
]


@dataclass
class Store:
    """An MLflow store (``<root>/mlflow.db``, artifacts beside it) and the working folder of the runs
    that use it (their ``outputs/``)."""
    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def exists(self) -> bool:
        """Whether anything made the store's database (opening it with MLflow would create it, at the
        cost of its migrations, about a second)."""
        return (self.root / "mlflow.db").is_file()

    def runs(self, experiment: str = "kronos_exp"):
        """Every run of ``experiment``, oldest first (none where nothing made the database)."""
        if not self.exists():
            return []
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])

    def versions(self, name: str):
        """The registered versions of model ``name``, oldest first (none where nothing made the database)."""
        if not self.exists():
            return []
        return sorted(self.client().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))

    def by_phase(self, runs=None) -> dict[str, Any]:
        """{phase: run} of ``runs`` (default: the store's; the last run of each phase wins)."""
        return {r.data.tags["phase"]: r for r in (self.runs() if runs is None else runs) if "phase" in r.data.tags}


# -- the real CLI in a subprocess ------------------------------------------------------------------

@dataclass
class Cli(Store):
    """``python -m kronos_exp ...`` in a subprocess whose working folder is ``root``."""

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


# -- the pipeline in this process ------------------------------------------------------------------

@dataclass
class Outcome:
    """What one in-process run did, as the CLI would have shown it: ``returncode`` 0, or 1 for a user
    error, whose ``error: ...`` line (``kronos_exp.__main__`` prints ``error: {user_message(err)}``)
    ends ``stderr``; ``stdout`` has the log lines (Hydra's console handler writes them there) and
    what the run printed, ``stderr`` what it printed there and the warnings Python would have shown."""
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    objective: Any = None
    error: BaseException | None = None
    output_dir: Path | None = None
    cfg: Any = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class PipelineBug(AssertionError):
    """The run raised something that is no user error: the CLI would have printed a traceback."""


def compose(*overrides: str, hydra_config: bool = True):
    """The config ``python -m kronos_exp <overrides>`` runs with (Hydra's own section included unless
    ``hydra_config=False``). Hydra's global state is cleared before and after."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kronos_exp.__main__ import CONFIG_DIR  # (registers the schemas and resolvers)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="kronos_exp"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_config)
    finally:
        GlobalHydra.instance().clear()


class ProcessState:
    """What a run in this process may change, saved on entry and put back on exit: the working
    folder, the environment (the pipeline sets and clears KRONOS_EXP_* and MLFLOW_* variables),
    MLflow's tracking URI, torch's threads, the root logger, Hydra's global state. A run left active
    in MLflow's fluent API is ended KILLED and reported as a PipelineBug."""

    def __enter__(self):
        import mlflow.tracking._tracking_service.utils as tracking_utils
        import torch
        from hydra.core.hydra_config import HydraConfig

        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.tracking_uri = tracking_utils._tracking_uri
        self.threads = torch.get_num_threads()
        root = logging.getLogger()
        self.root_level, self.root_handlers = root.level, list(root.handlers)
        self.levels = {name: logging.getLogger(name).level for name in ("kronos_exp", "urllib3.connectionpool")}
        self.hydra_cfg = HydraConfig.instance().cfg
        return self

    def __exit__(self, *exc):
        import mlflow
        import torch
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        left_running = mlflow.active_run()
        while mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        os.chdir(self.cwd)
        mlflow.set_tracking_uri(self.tracking_uri)  # (also sets or unsets MLFLOW_TRACKING_URI)
        os.environ.clear()
        os.environ.update(self.environ)
        torch.set_num_threads(self.threads)
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if handler not in self.root_handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in self.root_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(self.root_level)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        HydraConfig.instance().cfg = self.hydra_cfg
        GlobalHydra.instance().clear()
        if left_running is not None and exc[0] is None:
            raise PipelineBug(f"the run left MLflow run {left_running.info.run_id} active in the process")
        return False


@contextlib.contextmanager
def captured(stdout: io.StringIO, stderr: io.StringIO):
    """sys.stdout and sys.stderr into the buffers, and the warnings a fresh interpreter shows (its
    default filters) written to ``stderr`` as it would print them, not handed to pytest."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                yield
        finally:
            for w in caught:
                stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))


def _exit_code(stop: SystemExit, stderr: io.StringIO) -> int:
    """What the interpreter does with an uncaught SystemExit: a message is printed, exit status 1."""
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    stderr.write(f"{stop.code}\n")
    return 1


@dataclass
class Pipeline(Store):
    """``kronos_exp.pipeline.run`` in this process, in ``root`` as its working folder (where the CLI
    would have been started), against the SQLite store in ``root`` unless told otherwise."""

    def compose(self, *overrides: str, fast: bool = True, tracking_uri: str | None = None):
        return compose(*(FAST if fast else []), *overrides,
                       f"mlflow.tracking_uri={tracking_uri or self.tracking_uri}")

    def run(self, *overrides: str, fast: bool = True, check: bool = True, tracking_uri: str | None = None,
            timeout: int | None = None) -> Outcome:
        """One run, as ``python -m kronos_exp [FAST] <overrides> mlflow.tracking_uri=<this store>``
        started in ``root``: Hydra's run folder (with .hydra/ and the job's log file), the run
        callbacks of conf/config.yaml, then the pipeline. A user error ends it with returncode 1 and
        its ``error:`` line (with ``check``, an AssertionError carrying the output); any other
        exception is a PipelineBug, carrying the output. (``timeout``, as Cli.run takes it, is
        pytest-timeout's here.)"""
        from hydra.core.hydra_config import HydraConfig
        from hydra.errors import CompactHydraException
        from hydra.utils import instantiate
        from omegaconf import OmegaConf, open_dict, read_write
        from omegaconf.errors import OmegaConfBaseException

        from kronos_exp.errors import user_message
        from kronos_exp.pipeline import run as run_pipeline

        outcome = Outcome()
        stdout, stderr = io.StringIO(), io.StringIO()
        with ProcessState():
            os.chdir(self.root)
            try:
                cfg = self.compose(*overrides, fast=fast, tracking_uri=tracking_uri)
            except CompactHydraException as err:  # printed by Hydra as its message alone, exit status 1
                stderr.write(f"{err}\n" + (f"{err.__cause__}\n" if isinstance(err.__cause__, OmegaConfBaseException)
                                           else ""))
                outcome.returncode, outcome.error, outcome.stderr = 1, err, stderr.getvalue()
                if check:
                    raise AssertionError(f"exit 1\nSTDERR\n{outcome.stderr}") from err
                return outcome
            HydraConfig.instance().set_config(cfg)
            output_dir = (self.root / str(cfg.hydra.run.dir)).resolve()
            with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                cfg.hydra.runtime.output_dir = str(output_dir)
            HydraConfig.instance().set_config(cfg)
            task_cfg = copy.deepcopy(cfg)  # what Hydra's run_job hands the task: the config less its hydra node
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            outcome.output_dir, outcome.cfg = output_dir, task_cfg
            callbacks = [instantiate(c) for c in (cfg.hydra.callbacks or {}).values()]
            handlers: list[logging.Handler] = []
            try:
                with captured(stdout, stderr):
                    for callback in callbacks:
                        callback.on_run_start(config=cfg)
                    # Hydra's run: the folder with .hydra/, and logging as hydra.job_logging sets it up.
                    output_dir.mkdir(parents=True, exist_ok=True)
                    (output_dir / ".hydra").mkdir(exist_ok=True)
                    OmegaConf.save(task_cfg, output_dir / ".hydra" / "config.yaml")
                    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), output_dir / ".hydra" / "hydra.yaml")
                    OmegaConf.save(cfg.hydra.overrides.task, output_dir / ".hydra" / "overrides.yaml")
                    fmt = logging.Formatter(OmegaConf.select(cfg, "hydra.job_logging.formatters.simple.format")
                                            or "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
                    handlers = [logging.StreamHandler(stdout),
                                logging.FileHandler(output_dir / f"{cfg.hydra.job.name}.log")]
                    root = logging.getLogger()
                    for handler in handlers:
                        handler.setFormatter(fmt)
                        root.addHandler(handler)
                    root.setLevel(logging.INFO)
                    outcome.objective = run_pipeline(task_cfg, output_dir)
                    for callback in callbacks:
                        callback.on_run_end(config=cfg)
            except SystemExit as stop:
                outcome.returncode, outcome.error = _exit_code(stop, stderr), stop
            except Exception as err:
                message = user_message(err)
                if message is None:
                    raise PipelineBug(f"{type(err).__name__}: {err}\nSTDOUT\n{stdout.getvalue()[-3000:]}\n"
                                      f"STDERR\n{stderr.getvalue()[-3000:]}") from err
                outcome.returncode, outcome.error = 1, err
                stderr.write(f"error: {message}\n")
            finally:
                for handler in handlers:
                    handler.flush()
        outcome.stdout, outcome.stderr = stdout.getvalue(), stderr.getvalue()
        if check and outcome.returncode != 0:
            raise AssertionError(f"exit {outcome.returncode}\nSTDOUT\n{outcome.stdout[-3000:]}\n"
                                 f"STDERR\n{outcome.stderr[-5000:]}")
        return outcome


def forecast_command(cwd: Path, *args: str) -> Outcome:
    """``python -m kronos_exp.forecasting <args>`` run in this process in ``cwd``: its returncode,
    stdout and stderr as the command would have exited and printed."""
    from kronos_exp.forecasting.cli import run

    outcome = Outcome()
    stdout, stderr = io.StringIO(), io.StringIO()
    with ProcessState():
        os.chdir(cwd)
        try:
            with captured(stdout, stderr):
                run(list(args))
        except SystemExit as stop:
            outcome.returncode, outcome.error = _exit_code(stop, stderr), stop
    outcome.stdout, outcome.stderr = stdout.getvalue(), stderr.getvalue()
    return outcome


# -- copies of a store -----------------------------------------------------------------------------

def _rewrite_paths(db: Path, old: str, new: str) -> None:
    """Every text value in the SQLite database that names ``old`` (artifact locations, model version
    sources, tags and params holding paths) names ``new`` instead."""
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [c[1] for c in con.execute(f'PRAGMA table_info("{table}")')]:
                con.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                            f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                            (old + "/", new + "/", old + "/"))
                con.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (new, old))


def copy_store(source: Path, destination: Path) -> Path:
    """``source`` (a store's folder: the database, its artifacts, the runs' outputs/) copied to
    ``destination``, with the absolute paths the database holds pointing into the copy."""
    shutil.copytree(source, destination, symlinks=True)
    _rewrite_paths(destination / "mlflow.db", str(source), str(destination))
    return destination


@dataclass
class TrainedStore(Pipeline):
    """A store holding one finished ``phases=all`` run: both phases fine-tuned from the parity
    checkpoints (so the eval step measures the pretrained weights too) and registered as
    kronos-tokenizer v1 and kronos-predictor v1 (alias ``best``), then evaluated. ``outcome`` is
    that run's Outcome (its banner and closing lines in ``outcome.stdout``); ``run(*SETTINGS, ...)``
    runs with the same settings, so that its phases are the registered ones."""
    outcome: Outcome | None = field(default=None, repr=False)

    # 24 origins: 8 dates x 3 series, enough for a verdict (5 dates) and a backtest (8 periods).
    EVAL = ["eval.windows=24", "eval.sample_count=4", "eval.pred_len=8"]
    PRETRAINED = [f"tokenizer.pretrained={PARITY / 'tokenizer'}", f"predictor.pretrained={PARITY / 'predictor'}"]
    SETTINGS = [*FAST, *EVAL, *PRETRAINED]  # every override of the run but phases=all

    @classmethod
    def train(cls, root: Path) -> "TrainedStore":
        store = cls(root)
        store.outcome = store.run("phases=all", *cls.SETTINGS, fast=False)
        return store

    def digest(self) -> str:
        return hashlib.sha256((self.root / "mlflow.db").read_bytes()).hexdigest()

    def copy(self, destination: Path) -> "TrainedStore":
        """A copy in ``destination`` to add runs to (the database's paths point into the copy)."""
        return TrainedStore(copy_store(self.root, destination), outcome=self.outcome)


# -- what a user-facing failure looks like, in process or through the real CLI ---------------------

def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def one_error_line(proc) -> str:
    """The single ``error: ...`` line a refused run ends with (exit status 1, no traceback)."""
    assert proc.returncode == 1
    no_traceback(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def refused_before_any_work(proc, store: Store, message: str) -> None:
    """A bad setting: one error line starting with ``message``, nothing trained, nothing in MLflow."""
    assert one_error_line(proc).startswith(message), proc.stderr[-3000:]
    assert "training" not in proc.stdout + proc.stderr
    assert store.runs() == []  # refused before MLflow was touched: nothing RUNNING, nothing at all


def statuses(store: Store) -> list[str]:
    return sorted(r.info.status for r in store.runs())


# -- the manual: README.md and the pages under docs/ ------------------------------------------------
# Tests that check a command or an output the manual shows read it from here, wherever it lives.

REPO = Path(__file__).resolve().parents[1]


def manual_pages() -> dict[str, str]:
    """Each page of the manual by its path in the repository: README.md, then docs/**/*.md."""
    pages = {"README.md": (REPO / "README.md").read_text()}
    for path in sorted((REPO / "docs").rglob("*.md")):
        pages[path.relative_to(REPO).as_posix()] = path.read_text()
    return pages


def manual_text() -> str:
    """Every page of the manual, one after another."""
    return "\n".join(manual_pages().values())


def page(name: str) -> str:
    """One page: ``page("serving")`` is docs/serving.md, ``page("README")`` README.md."""
    return (REPO / ("README.md" if name == "README" else f"docs/{name}.md")).read_text()


def snippet(name: str) -> str:
    """The code of the block the manual marks ``<!-- ci:<name> -->`` ... ``<!-- /ci:<name> -->`` (on
    exactly one page), without its fence."""
    import re

    found = [m.group(1) for text in manual_pages().values() for m in re.finditer(
        rf"<!-- ci:{re.escape(name)} -->\n```\w*\n(.*?)```\n<!-- /ci:{re.escape(name)} -->", text, re.S)]
    assert len(found) == 1, f"the manual has {len(found)} ci:{name} blocks, not one"
    return found[0]
