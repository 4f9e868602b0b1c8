"""The registered predictor as an MLflow pyfunc model: OHLCV + timestamps in, forecast frame out.

A thin adapter over ``KronosPredictor`` and forecasting.requests (no forecasting logic of its own).
The predictor's checkpoint folder is itself the MLflow model: ``config.json`` + ``model.safetensors``
at its top, ``MLmodel`` and the model code (served_model.py, MLflow's models-from-code: no pickle)
beside them, the tokenizer under ``artifacts/tokenizer``. So
``mlflow models serve -m models:/kronos-predictor/<v> --env-manager local`` serves it, and
``load_predictor`` reads it without running any of its files.

What the model was trained to see (``WindowSpec``: lookback, horizon, clip, max_context) is the
MLmodel file's own ``kronos`` flavor block, and ``window.json`` beside the weights; every forecast
from the package (served, the forecast command, evaluation) normalises with it.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import re
import shutil
import signal
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import ErrorCode
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from .. import __version__
from ..model import Kronos, KronosTokenizer
from ..model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, CheckpointNotFound, move_into_place
from ..tracking.registry import integrity_problem
from ..window import WindowSpec, WindowSpecError
from .candles import valid_candles
from .generation import T_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT, GenerationStopped
from .horizon import future_timestamps
from .package_layout import TOKENIZER_ARTIFACT, tokenizer_dir
from .predictor import COLUMNS, KronosPredictor
from .requests import Limits, RequestRefused, Served, Slots, check_forecast, check_params, read_history, stopper

TIMESTAMP_COLUMN = "timestamps"
MLMODEL = "MLmodel"
MODEL_CODE = Path(__file__).with_name("served_model.py")
FLAVOR = "kronos"  # the MLmodel block holding the window: {"window": {...}, "kronos_exp_version": ...}


def package_window(model_dir: str | Path) -> WindowSpec:
    """The window a packaged predictor was trained with: its MLmodel's ``kronos`` block, else its
    window.json, else (packages made before either existed) the published defaults."""
    mlmodel = Path(model_dir) / MLMODEL
    block = Model.load(str(mlmodel)).flavors.get(FLAVOR) if mlmodel.is_file() else None
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


def signature(pred_len: int) -> ModelSignature:
    """Params only: the history's columns are found as training finds a CSV's (forecasting.requests),
    which a column schema would pre-empt (Yahoo's ``Date,Open,...`` would be refused)."""
    params = ParamSchema([ParamSpec("pred_len", "long", pred_len), ParamSpec("T", "double", T_DEFAULT),
                          ParamSpec("top_p", "double", TOP_P_DEFAULT), ParamSpec("top_k", "long", TOP_K_DEFAULT),
                          ParamSpec("sample_count", "long", 1), ParamSpec("freq", "string", ""),
                          ParamSpec("seed", "long", -1), ParamSpec("raw_candles", "boolean", False)])
    outputs = Schema([ColSpec("datetime", TIMESTAMP_COLUMN)] + [ColSpec("double", c) for c in COLUMNS])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


class Refusal(MlflowException):
    """A RequestRefused as the scoring server answers it: its status (MLflow's error codes have no 422),
    and its one sentence alone (the server prefixes a model's error message with the whole input,
    which this keeps out)."""

    def __init__(self, refused: RequestRefused):
        self._sentence, self._status = str(refused), refused.status
        codes = {400: "INVALID_PARAMETER_VALUE", 422: "INVALID_PARAMETER_VALUE", 503: "TEMPORARILY_UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
        super().__init__(self._sentence, error_code=ErrorCode.Value(codes.get(refused.status, "BAD_REQUEST")))

    def get_http_status_code(self) -> int:
        return self._status

    @property
    def message(self) -> str:
        return self._sentence

    @message.setter
    def message(self, _value: str) -> None:
        pass


class _IgnoredParams(logging.Filter):
    """MLflow drops params its signature does not declare before the model sees them, with only a
    warning; this notes them (per thread: the server predicts in worker threads) so the request is
    refused instead of answered as if they were not there."""

    PATTERN = re.compile(r"Unrecognized params (\[.*?\]) are ignored")

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        match = self.PATTERN.match(record.getMessage())
        if match:
            self.seen.names = ast.literal_eval(match.group(1))
        return True

    def take(self) -> list[str]:
        names, self.seen.names = getattr(self.seen, "names", []), []
        return names


IGNORED_PARAMS = _IgnoredParams()


def _watch_ignored_params() -> None:
    logger = logging.getLogger("mlflow.models.utils")  # where _enforce_params_schema warns
    if IGNORED_PARAMS not in logger.filters:
        logger.addFilter(IGNORED_PARAMS)
    if not logger.isEnabledFor(logging.WARNING):
        logger.setLevel(logging.WARNING)


def server_stopping() -> bool:
    """Whether uvicorn (what ``mlflow models serve`` runs) got SIGTERM: its handler is the bound
    ``Server.handle_exit``, which sets ``should_exit`` and then waits for requests in flight."""
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


class KronosForecaster(mlflow.pyfunc.PythonModel):
    """pyfunc: one series' history (a timestamp column and open, high, low, close[, volume, amount],
    named as a training CSV may name them) -> its forecast (``timestamps`` + the six columns).
    Params: pred_len, T, top_p, top_k, sample_count, freq (of the future timestamps; empty = the
    history's median step), seed (-1 = none), raw_candles (false: valid bars, forecasting.candles;
    true: the model's raw bars). What it refuses: forecasting.requests."""

    def __init__(self) -> None:
        self.predictor: KronosPredictor | None = None
        self.limits = Limits()
        self.slots = Slots(self.limits)

    def load_context(self, context) -> None:
        # The predictor checkpoint is the model folder itself, two levels above artifacts/tokenizer.
        root = Path(context.artifacts[TOKENIZER_ARTIFACT]).parents[1]
        self.predictor = load_predictor(root)
        self.limits = Limits.from_mapping((context.model_config or {}).get("limits"))
        self.slots = Slots(self.limits)
        Served.limits = self.limits
        _watch_ignored_params()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return self._forecast(model_input, params or {})
        except RequestRefused as refused:
            raise Refusal(refused) from None

    def _forecast(self, model_input: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        config = self.predictor.model.config
        sampling = check_params(params, IGNORED_PARAMS.take(), self.limits,
                                2 ** max(config["s1_bits"], config["s2_bits"]))
        if not isinstance(model_input, pd.DataFrame):
            raise RequestRefused(f"the input must be a table of rows (dataframe_split or dataframe_records), "
                                 f"not {type(model_input).__name__}")
        history, stamps = read_history(model_input, self.limits)
        try:
            future = future_timestamps(stamps, sampling.pred_len, sampling.freq)
        except ValueError as err:  # one timestamp and no freq, or a freq pandas does not know
            raise RequestRefused(f"cannot make the forecast's timestamps: {str(err).splitlines()[0]}") from None
        generator = torch.Generator(device=self.predictor.device)
        if sampling.seed >= 0:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
        try:
            with self.slots.held():
                (forecast,) = self.predictor.forecast_batch(
                    [history], [pd.Series(stamps)], [future], sampling.pred_len, T=sampling.T,
                    top_k=sampling.top_k, top_p=sampling.top_p, sample_count=sampling.sample_count, verbose=False,
                    generator=generator, stop=stopper(self.limits, server_stopping))
        except GenerationStopped as err:
            raise RequestRefused(str(err), status=503 if "shutting down" in str(err) else 504) from None
        forecast = check_forecast(forecast)
        if not sampling.raw_candles:
            forecast = valid_candles(forecast)
        return forecast.rename_axis(TIMESTAMP_COLUMN).reset_index()


def _save(path: Path, tokenizer: Path, window: WindowSpec, limits: Limits) -> None:
    mlmodel = Model()
    mlmodel.add_flavor(FLAVOR, window=window.to_dict(), kronos_exp_version=__version__)
    mlflow.pyfunc.save_model(
        path=str(path), python_model=str(MODEL_CODE), artifacts={TOKENIZER_ARTIFACT: str(tokenizer)},
        model_config={"limits": dataclasses.asdict(limits)}, mlflow_model=mlmodel,
        signature=signature(window.horizon),
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
        # save_model names the copied artifact after its folder: stage it as artifacts/tokenizer.
        shutil.copytree(tokenizer_checkpoint, staging / TOKENIZER_ARTIFACT)
        # Quiet MLflow's general advice: the signature is written out by signature() rather than
        # inferred from an input example.
        pyfunc_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _save(staging / "model", staging / TOKENIZER_ARTIFACT, window, limits)
        # The whole package is built beside the checkpoint and put in its place at once, so a kill
        # leaves the plain checkpoint or the package; packaging a folder again (a resumed run's)
        # starts from its plain files, whatever an earlier attempt left.
        packaged = staging / "model"
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copy2(predictor_dir / name, packaged / name, follow_symlinks=False)
        window.save(packaged)
        move_into_place(packaged, predictor_dir)
    finally:
        pyfunc_log.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
