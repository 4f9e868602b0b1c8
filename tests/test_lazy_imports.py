"""What a run's start costs: matplotlib is imported only once a figure is drawn (importing the
pipeline, the eval step or the forecast command does not pay for it), the model package loads no
pandas, and the CLI imports with the cyclic collector off."""
from __future__ import annotations

import os
import subprocess
import sys

_CHECK = """
import sys
import kronos_exp.pipeline, kronos_exp.eval_step, kronos_exp.forecasting.cli
print(",".join(m for m in ("matplotlib", "matplotlib.pyplot") if m in sys.modules))
"""


def test_importing_the_run_does_not_import_matplotlib():
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"imported at module level: {proc.stdout.strip()}"


_MODEL_ALONE = """
import sys
import kronos_exp.model
from kronos_exp.model import Kronos, KronosTokenizer
loaded = [m for m in ("pandas", "kronos_exp.data", "kronos_exp.forecasting") if m in sys.modules]
print(",".join(loaded) or "-", hasattr(kronos_exp.model, "KronosPredictor"))
"""


def test_the_model_package_alone_loads_no_pandas():
    """Tensors in, tensors out: the networks load without pandas, data/ or forecasting/; the pandas
    adapter (KronosPredictor) is kronos_exp.forecasting's alone."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", _MODEL_ALONE], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["-", "False"], f"loaded with kronos_exp.model: {proc.stdout.strip()}"


_STARTUP = """
import gc, runpy, sys
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
sys.argv = ["kronos_exp", "--help"]  # Hydra prints the help and exits before the run
try:
    runpy.run_module("kronos_exp", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(len(collections), gc.isenabled())
"""

_FREEZE = """
import gc
from kronos_exp import collector
collector.pause_for_imports()
import torch, mlflow
paused = gc.isenabled()
collector.imports_done()
frozen = gc.get_freeze_count()
leftovers = [[] for _ in range(1000)]
collector.imports_done()  # a later job of a sweep in this process: its leftovers are not frozen
print(paused, frozen > 100_000, gc.get_freeze_count() == frozen, gc.isenabled())
"""

_NEVER_PAUSED = """
import gc
from kronos_exp import collector
gc.disable()  # a host process's own choice
collector.imports_done()
print(gc.isenabled())
"""

_IN_PROCESS = """
import gc, runpy, sys
sys.argv = ["kronos_exp", "predictor.lrr=1"]
try:
    runpy.run_module("kronos_exp", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(gc.isenabled())
"""


def _python(code: str) -> list[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_the_cli_imports_with_the_collector_off_and_gives_it_back():
    """The collector's passes over the objects torch, MLflow and Hydra create while importing cost
    about 2 s of every run (hundreds of collections); run as the program, the CLI imports with none,
    and the collector is on again when it returns, also where it ends before the run (--help)."""
    collections, enabled = _python(_STARTUP)[-2:]
    assert int(collections) < 10 and enabled == "True"  # a library's own gc.collect() still runs


def test_what_the_imports_left_is_frozen_once():
    assert _python(_FREEZE) == ["False", "True", "True", "True"]


def test_a_process_that_never_paused_the_collector_keeps_its_own_setting():
    """A launcher's worker runs the CLI's main without the program's start."""
    assert _python(_NEVER_PAUSED) == ["False"]


def test_a_caller_running_the_cli_in_process_gets_its_collector_back_after_a_bad_override():
    assert _python(_IN_PROCESS)[-1:] == ["True"]


def test_importing_the_cli_as_a_module_leaves_the_collector_alone():
    """Tests and launchers' workers import kronos_exp.__main__ for its paths and task function."""
    assert _python("import gc, kronos_exp.__main__; print(gc.isenabled())") == ["True"]
