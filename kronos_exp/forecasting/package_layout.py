"""Where a packaged predictor keeps its parts, for readers that must not import mlflow (the
evaluation step finds a predictor version's tokenizer here). forecasting.pyfunc writes this layout."""
from __future__ import annotations

from pathlib import Path

TOKENIZER_ARTIFACT = "tokenizer"  # the pyfunc artifact's name, and its folder under artifacts/


def tokenizer_dir(model_dir: str | Path) -> Path:
    """The tokenizer checkpoint packaged inside a predictor folder (it may not exist)."""
    return Path(model_dir) / "artifacts" / TOKENIZER_ARTIFACT
