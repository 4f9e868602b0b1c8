"""Where a packaged predictor keeps its parts, for readers that must not import mlflow (the
evaluation step finds a predictor version's tokenizer here). forecasting.pyfunc writes this layout:
``config.json`` + ``model.safetensors`` (the predictor) and ``window.json`` at the top, beside
``MLmodel``, the tokenizer under ``artifacts/tokenizer``."""
from __future__ import annotations

from pathlib import Path

TOKENIZER_ARTIFACT = "tokenizer"  # the tokenizer's folder under artifacts/
MLMODEL = "MLmodel"
FLAVOR = "kronos"  # the MLmodel block holding the window: {"window": {...}, "kronos_exp_version": ...}
LOADER_MODULE = "kronos_exp.forecasting.served_model"  # what MLmodel's pyfunc flavor names as its loader
TIMESTAMP_COLUMN = "timestamps"  # the forecast's time column, served and written by the forecast command


def tokenizer_dir(model_dir: str | Path) -> Path:
    """The tokenizer checkpoint packaged inside a predictor folder (it may not exist)."""
    return Path(model_dir) / "artifacts" / TOKENIZER_ARTIFACT
