"""The registered predictor as an MLflow pyfunc model: OHLCV + timestamps in, forecast frame out.

A thin adapter over ``KronosPredictor`` (no forecasting logic of its own). The predictor's
checkpoint folder is itself the MLflow model: ``config.json`` + ``model.safetensors`` stay at its
top (so the registry's checksum, ``skip_existing`` and ``Kronos.from_pretrained`` read it as
before), ``MLmodel`` and the pickled wrapper sit beside them, the tokenizer under
``artifacts/tokenizer``. So ``mlflow.pyfunc.load_model("models:/kronos-predictor/<v>")`` and
``mlflow models serve -m models:/kronos-predictor/<v> --env-manager local`` both work. The wrapper is
pickled by reference to this module (kronos_exp.forecasting.pyfunc.KronosForecaster).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import CONFIG_NAME, CheckpointNotFound
from .horizon import future_timestamps
from .predictor import COLUMNS, KronosPredictor

TOKENIZER_ARTIFACT = "tokenizer"
TIMESTAMP_COLUMN = "timestamps"
MLMODEL = "MLmodel"


def tokenizer_dir(model_dir: Path) -> Path:
    return Path(model_dir) / "artifacts" / TOKENIZER_ARTIFACT


def load_predictor(model_dir: str | Path, max_context: int = 512, device: str | None = None) -> KronosPredictor:
    """A KronosPredictor from a packaged predictor folder (its tokenizer inside)."""
    model_dir = Path(model_dir)
    tok = tokenizer_dir(model_dir)
    if not (tok / CONFIG_NAME).is_file():
        raise CheckpointNotFound(f"'{model_dir}' holds no packaged tokenizer ({tok}); it was registered "
                                 "before predictor versions carried their tokenizer, or is not a predictor")
    return KronosPredictor(Kronos.from_pretrained(model_dir), KronosTokenizer.from_pretrained(tok), device=device,
                           max_context=max_context)


def signature(pred_len: int) -> ModelSignature:
    optional = ("volume", "amount")
    columns = [ColSpec("datetime", TIMESTAMP_COLUMN)] + [
        ColSpec("double", c, required=c not in optional) for c in COLUMNS]
    params = ParamSchema([ParamSpec("pred_len", "long", pred_len), ParamSpec("T", "double", 1.0),
                          ParamSpec("top_p", "double", 0.9), ParamSpec("top_k", "long", 0),
                          ParamSpec("sample_count", "long", 1), ParamSpec("freq", "string", ""),
                          ParamSpec("seed", "long", -1)])
    outputs = Schema([ColSpec("datetime", TIMESTAMP_COLUMN)] + [ColSpec("double", c) for c in COLUMNS])
    return ModelSignature(inputs=Schema(columns), outputs=outputs, params=params)


class KronosForecaster(mlflow.pyfunc.PythonModel):
    """pyfunc: one series' history (``timestamps``, open, high, low, close[, volume, amount]) ->
    its forecast (``timestamps`` + the six columns). Params: pred_len, T, top_p, top_k,
    sample_count, freq (of the future timestamps; empty = the history's median step), seed (-1 = none)."""

    def __init__(self, max_context: int) -> None:
        self.max_context = max_context
        self.predictor: KronosPredictor | None = None

    def load_context(self, context) -> None:
        # The predictor checkpoint is the model folder itself, two levels above artifacts/tokenizer.
        root = Path(context.artifacts[TOKENIZER_ARTIFACT]).parents[1]
        self.predictor = load_predictor(root, self.max_context)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = params or {}
        pred_len = int(p.get("pred_len", 16))
        if int(p.get("seed", -1)) >= 0:
            torch.manual_seed(int(p["seed"]))
        history = model_input.sort_values(TIMESTAMP_COLUMN)
        stamps = pd.to_datetime(history[TIMESTAMP_COLUMN])
        forecast = self.predictor.predict(
            history.drop(columns=[TIMESTAMP_COLUMN]).reset_index(drop=True), stamps.reset_index(drop=True),
            future_timestamps(stamps, pred_len, str(p.get("freq", ""))), pred_len,
            T=float(p.get("T", 1.0)), top_k=int(p.get("top_k", 0)), top_p=float(p.get("top_p", 0.9)),
            sample_count=int(p.get("sample_count", 1)), verbose=False)
        return forecast.rename_axis(TIMESTAMP_COLUMN).reset_index()


def _save(path: Path, tokenizer: Path, max_context: int, pred_len: int) -> None:
    mlflow.pyfunc.save_model(
        path=str(path), python_model=KronosForecaster(max_context), artifacts={TOKENIZER_ARTIFACT: str(tokenizer)},
        signature=signature(pred_len),
        # Serve with --env-manager local: kronos_exp is installed where it runs, not on PyPI.
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}", "kronos_exp"])


def package(predictor_dir: Path, tokenizer_checkpoint: Path, max_context: int, pred_len: int) -> None:
    """Make the predictor checkpoint folder an MLflow pyfunc model with its tokenizer inside."""
    predictor_dir = Path(predictor_dir)
    staging = Path(tempfile.mkdtemp(prefix=".pyfunc.", dir=predictor_dir.parent))
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    try:
        # save_model names the copied artifact after its folder: stage it as artifacts/tokenizer.
        shutil.copytree(tokenizer_checkpoint, staging / TOKENIZER_ARTIFACT)
        # Quiet MLflow's general advice: the wrapper is pickled by reference to this module, and the
        # signature is written out by signature() rather than inferred from an input example.
        pyfunc_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _save(staging / "model", staging / TOKENIZER_ARTIFACT, max_context, pred_len)
        for entry in (staging / "model").iterdir():
            if (predictor_dir / entry.name).exists():
                raise FileExistsError(f"{predictor_dir / entry.name} already exists; packaging would overwrite it")
            shutil.move(str(entry), predictor_dir / entry.name)
    finally:
        pyfunc_log.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
