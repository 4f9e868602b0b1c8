"""What a run does not use is imported when it is used: matplotlib only once a figure is drawn, so
importing the pipeline, the eval step or the forecast command does not pay for it."""
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
