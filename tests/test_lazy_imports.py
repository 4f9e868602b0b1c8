"""What a run's start costs: matplotlib is imported only once a figure is drawn (importing the
pipeline, the eval step or the forecast command does not pay for it), the model package loads no
pandas, and the CLI imports with the cyclic collector off."""
from __future__ import annotations

import os
import subprocess
import sys

_CHECK = """
import sys
import kronos_exp.pipeline, kronos_exp.evaluation.step, kronos_exp.forecasting.cli
print(",".join(m for m in ("matplotlib", "matplotlib.pyplot") if m in sys.modules))
"""


def test_importing_the_run_does_not_import_matplotlib():
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"imported at module level: {proc.stdout.strip()}"


_PUBLISHED_NAMES = """
import sys
import kronos_exp.model
before = [m for m in ("pandas", "kronos_exp.data", "kronos_exp.forecasting") if m in sys.modules]
from kronos_exp.model import Kronos, KronosPredictor, KronosTokenizer
from kronos_exp.forecasting import KronosPredictor as adapter
print(",".join(before), KronosPredictor is adapter)
"""


def test_the_published_import_line_works_and_model_alone_loads_no_pandas():
    """Scripts written for the published API (the shared parity check) import all three names from
    the model package; the pandas adapter is looked up only when asked for."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", _PUBLISHED_NAMES], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True"], f"loaded with kronos_exp.model: {proc.stdout.strip()}"


_STARTUP = """
import gc, sys
import kronos_exp.__main__ as cli
during = gc.isenabled()
cli.started()
frozen = gc.get_freeze_count()
leftovers = [[] for _ in range(1000)]
cli.started()  # a later job of a sweep in this process: its leftovers are not frozen
print(during, gc.isenabled(), frozen > 100_000, gc.get_freeze_count() == frozen)
"""

_IN_PROCESS = """
import gc, runpy, sys
for argv in (["kronos_exp", "--help"], ["kronos_exp", "predictor.lrr=1"]):
    sys.argv = argv
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


def test_the_cli_imports_with_the_collector_off_and_then_freezes_what_the_imports_left():
    """The collector's passes over the objects torch, MLflow and Hydra create while importing cost
    about 2 s of every run; once the imports are done they sit in the permanent generation."""
    assert _python(_STARTUP) == ["False", "True", "True", "True"]


def test_a_caller_running_the_cli_in_process_gets_its_collector_back_whatever_the_cli_ends_with():
    """--help and a bad override end before the run starts (where the collector is turned back on)."""
    assert _python(_IN_PROCESS)[-2:] == ["True", "True"]
