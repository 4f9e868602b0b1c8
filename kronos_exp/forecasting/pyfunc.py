"""The registered predictor as an MLflow pyfunc model: OHLCV + timestamps in, forecast frame out.

The predictor's checkpoint folder is itself the MLflow model, and every file of it is data:
``config.json`` + ``model.safetensors`` at its top, ``MLmodel`` (YAML) and MLflow's environment
files beside them, the tokenizer under ``artifacts/tokenizer``, no Python and no pickle. Its MLmodel's
pyfunc flavor names the *installed* ``kronos_exp.forecasting.served_model`` as its ``loader_module``
(the form MLflow's own flavors take), and that loader serves a version only once every file is the
registered one. So ``mlflow models serve -m models:/kronos-predictor/<v> --env-manager local``
serves it, ``load_predictor`` (forecasting.packaged) reads it without running anything, and
``python -m kronos_exp.forecasting verify models:/kronos-predictor/<v>`` checks it, MLmodel included,
before a server that MLflow lets MLmodel direct is started.

What the model was trained to see (``WindowSpec``: lookback, horizon, clip, max_context) is the
MLmodel file's own ``kronos`` flavor block, and ``window.json`` beside the weights; every forecast
from the package (served, the forecast command, evaluation) normalises with it.

Packages made before (MLflow's models-from-code: their own ``served_model.py`` copy) make a
``KronosForecaster``; it serves as the loader does, the registered-digest check included.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from .. import __version__
from ..model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, move_into_place
from ..window import WindowSpec
from .generation import T_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT
from .package_layout import FLAVOR, LOADER_MODULE, TIMESTAMP_COLUMN, TOKENIZER_ARTIFACT, tokenizer_dir
from .packaged import load_predictor, package_window
from .predictor import COLUMNS
from .requests import Limits
from .served_model import load_served

__all__ = ["KronosForecaster", "input_example", "load_predictor", "package", "package_window", "signature"]


def signature(pred_len: int) -> ModelSignature:
    """Params only: the history's columns are found as training finds a CSV's (forecasting.requests),
    which a column schema would pre-empt (Yahoo's ``Date,Open,...`` would be refused)."""
    params = ParamSchema([ParamSpec("pred_len", "long", pred_len), ParamSpec("T", "double", T_DEFAULT),
                          ParamSpec("top_p", "double", TOP_P_DEFAULT), ParamSpec("top_k", "long", TOP_K_DEFAULT),
                          ParamSpec("sample_count", "long", 1), ParamSpec("freq", "string", ""),
                          ParamSpec("seed", "long", -1), ParamSpec("raw_candles", "boolean", False)])
    outputs = Schema([ColSpec("datetime", TIMESTAMP_COLUMN)] + [ColSpec("double", c) for c in COLUMNS])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


class KronosForecaster(mlflow.pyfunc.PythonModel):
    """What the ``served_model.py`` inside a package made before the ``kronos`` flavor (MLflow's
    models-from-code) sets as its model: it serves as forecasting.served_model does, once every file
    is the registered one."""

    def load_context(self, context) -> None:
        # The predictor checkpoint is the model folder itself, two levels above artifacts/tokenizer.
        self.served = load_served(Path(context.artifacts[TOKENIZER_ARTIFACT]).parents[1], context.model_config)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.served.predict(model_input, params)


EXAMPLE_ROWS = 16  # the input example's history: small (MLflow keeps it as JSON in MLmodel's folder)


def input_example(rows: int = EXAMPLE_ROWS) -> pd.DataFrame:
    """A small valid history as a client sends it (timestamps + OHLCV + amount, oldest first): daily
    bars of a gentle deterministic walk. MLflow saves it as ``input_example.json`` and
    ``serving_input_example.json`` (the body that POSTs to ``/invocations``); it only checks it
    against the signature's params, running no model."""
    close = [100.0 + 0.5 * i + (1.0 if i % 3 == 0 else -0.5) for i in range(rows)]
    open_ = [100.0] + close[:-1]
    frame = pd.DataFrame({
        TIMESTAMP_COLUMN: [str(d.date()) for d in pd.date_range("2024-01-02", periods=rows, freq="B")],
        "open": open_, "high": [max(o, c) + 0.75 for o, c in zip(open_, close)],
        "low": [min(o, c) - 0.75 for o, c in zip(open_, close)], "close": close,
        "volume": [1000.0 + 10 * i for i in range(rows)]})
    frame["amount"] = frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)
    return frame


def _save(path: Path, window: WindowSpec, limits: Limits) -> None:
    """MLmodel and MLflow's environment files in the new folder ``path``: the pyfunc flavor names the
    installed loader module (no ``code``, no ``data``: it reads the folder itself), the ``kronos``
    block the window, and an input example (``input_example``)."""
    mlmodel = Model()
    mlmodel.add_flavor(FLAVOR, window=window.to_dict(), kronos_exp_version=__version__)
    mlflow.pyfunc.save_model(
        path=str(path), loader_module=LOADER_MODULE, model_config={"limits": dataclasses.asdict(limits)},
        mlflow_model=mlmodel, signature=signature(window.horizon), input_example=input_example(),
        # Serve with --env-manager local: kronos_exp is installed where it runs, not on PyPI.
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}", "kronos_exp"])


def package(predictor_dir: Path, tokenizer_checkpoint: Path, window: WindowSpec, limits: Limits = Limits()) -> None:
    """Make the predictor checkpoint folder an MLflow pyfunc model with its tokenizer inside and the
    window it was trained with (the MLmodel's ``kronos`` block and window.json); ``window.horizon``
    is the signature's default pred_len."""
    predictor_dir = Path(predictor_dir)
    if window.horizon is None:
        raise ValueError(f"package({predictor_dir}): window.horizon is None; it is the served pred_len default "
                         "(the training predict_window)")
    saved = WindowSpec.load(predictor_dir)
    if (predictor_dir / WindowSpec.FILE).is_file() and saved != window:
        raise ValueError(f"{predictor_dir / WindowSpec.FILE} holds {saved.to_dict()}, not the window being packaged "
                         f"{window.to_dict()}")
    staging = Path(tempfile.mkdtemp(prefix=".pyfunc.", dir=predictor_dir.parent))
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    try:
        # Quiet MLflow's general advice: the signature is written out by signature() rather than
        # inferred from an input example.
        pyfunc_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _save(staging / "model", window, limits)
        # The whole package is built beside the checkpoint and put in its place at once, so a kill
        # leaves the plain checkpoint or the package; packaging a folder again (a resumed run's)
        # starts from its plain files, whatever an earlier attempt left.
        packaged = staging / "model"
        shutil.copytree(tokenizer_checkpoint, tokenizer_dir(packaged))
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copy2(predictor_dir / name, packaged / name, follow_symlinks=False)
        window.save(packaged)
        move_into_place(packaged, predictor_dir)
    finally:
        pyfunc_log.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
