"""The package keeps its layers: import-linter's contracts in pyproject.toml hold (no import from a
lower layer to a higher one, no import circle), and Hydra and MLflow stay where they belong."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in proc.stdout and "ignored" not in proc.stdout


# Hydra and OmegaConf: the entry points, the config's resolution and the pipeline only; below the
# pipeline every component is handed typed values (kronos_exp.schemas).
HYDRA_GLUE = {"__main__.py", "hydra_callbacks.py", "hydra_job.py", "slurm_jobs.py", "config.py", "pipeline.py"}
# MLflow: tracking/, and the packaged model MLflow loads (the package writer and the installed loader module).
MLFLOW_USERS = ("tracking/", "forecasting/pyfunc.py", "forecasting/served_model.py")


def _imported(path: Path) -> set[str]:
    """The top-level packages a module imports, lazy (in-function) imports included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_hydra_stays_in_the_glue_and_mlflow_in_tracking():
    package = ROOT / "kronos_exp"
    hydra, mlflow = [], []
    for path in sorted(package.rglob("*.py")):
        name, imported = path.relative_to(package).as_posix(), _imported(path)
        if imported & {"hydra", "omegaconf"} and name not in HYDRA_GLUE:
            hydra.append(name)
        if "mlflow" in imported and not name.startswith(MLFLOW_USERS):
            mlflow.append(name)
    assert hydra == [], f"import Hydra/OmegaConf below the pipeline: {hydra}"
    assert mlflow == [], f"import mlflow outside tracking/ and the packaged model: {mlflow}"
