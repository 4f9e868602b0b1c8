"""The working folder's ``outputs/``: where a run keeps what it makes unless told otherwise (Hydra's
run and sweep folders, conf/config.yaml; the embedded MLflow store and its artifacts; the Optuna
study beside it; the series cache; the record of runs a lost server left unended).

Bottom layer: imports nothing of the package.
"""
from __future__ import annotations

from pathlib import Path

OUTPUTS = "outputs"


def outputs_root(cwd: Path | None = None) -> Path:
    """``<cwd>/outputs`` (the current folder unless given)."""
    return (cwd or Path.cwd()) / OUTPUTS
