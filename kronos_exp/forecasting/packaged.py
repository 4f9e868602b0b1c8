"""A packaged predictor read as data: the window it was trained with and its KronosPredictor, from
its JSON, YAML and safetensors files only (nothing in the package is imported or run). The forecast
command, the served model and evaluation read packages through here; forecasting.pyfunc writes them."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import CONFIG_NAME, CheckpointError, CheckpointNotFound
from ..tracking.registry import integrity_problem
from ..window import WindowSpec, WindowSpecError
from .package_layout import FLAVOR, MLMODEL, tokenizer_dir
from .predictor import KronosPredictor


def package_window(model_dir: str | Path) -> WindowSpec:
    """The window a packaged predictor was trained with: its MLmodel's ``kronos`` block, else its
    window.json, else (packages made before either existed) the published defaults."""
    mlmodel = Path(model_dir) / MLMODEL
    block = None
    if mlmodel.is_file():
        try:
            flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as err:
            raise WindowSpecError(f"{mlmodel}: not an MLmodel file ({str(err).splitlines()[0]})") from None
        block = flavors.get(FLAVOR) if isinstance(flavors, dict) else None
    if block is None:
        return WindowSpec.load(model_dir)
    if not isinstance(block, dict) or "window" not in block:
        raise WindowSpecError(f"{mlmodel}: flavors.{FLAVOR} must be a mapping with a 'window' key, "
                              f"got {str(block)[:80]}")
    return WindowSpec.from_mapping(block["window"], f"{mlmodel} (flavors.{FLAVOR}.window)")


def load_predictor(model_dir: str | Path, registered: dict[str, str] | None = None,
                   device: str | None = None) -> KronosPredictor:
    """A KronosPredictor from a packaged predictor folder (its tokenizer inside), reading only JSON,
    YAML and safetensors. With the version's registry tags (``registered``), every file must be
    the registered one first."""
    model_dir = Path(model_dir)
    problem = integrity_problem(model_dir, registered) if registered is not None else None
    if problem:
        raise CheckpointError(f"{model_dir} is not the registered predictor ({problem}); nothing of it was loaded")
    tok = tokenizer_dir(model_dir)
    if not (tok / CONFIG_NAME).is_file():
        raise CheckpointNotFound(f"'{model_dir}' holds no packaged tokenizer ({tok}); it was registered "
                                 "before predictor versions carried their tokenizer, or is not a predictor")
    try:
        window = package_window(model_dir)
    except WindowSpecError as err:
        raise CheckpointError(f"{model_dir}: its window cannot be used: {err}") from None
    return KronosPredictor.from_window(Kronos.from_pretrained(model_dir), KronosTokenizer.from_pretrained(tok),
                                       window, device=device)
