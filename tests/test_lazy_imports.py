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
