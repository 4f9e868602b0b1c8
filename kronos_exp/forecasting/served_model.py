"""The code that serves a packaged predictor: the installed module a package's MLmodel names as its
pyfunc ``loader_module`` (the form MLflow's own flavors take), so MLflow runs this file, never one
from the artifact store. ``mlflow.pyfunc.load_model`` (and so ``mlflow models serve``) calls
``_load_pyfunc(<model folder>, model_config)``, which serves only a registered version whose every
file has its registered digest, and reads the package as data (forecasting.packaged).

Which version a folder may be: the model and fingerprint its ``registration.json`` names (written
by kronos_exp into every folder it registers, among the digested files); its digests: those
versions' ``files_sha256`` tags in the registry at ``mlflow.get_tracking_uri()`` (the store the URI
was resolved in). It serves as the version whose every file it has. A folder without that file is
refused: nothing says which digests its files must have. (MLflow before 3.18 also wrote
``registered_model_meta`` beside a downloaded version; MLflow 3.18 no longer does, and no
``models:/`` URI reaches a loader: so the folder says it itself.)

MLflow itself imports what MLmodel names before this runs: an MLmodel edited to name other code
is out of this module's reach; ``python -m kronos_exp.forecasting verify`` checks MLmodel too."""
from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode
from mlflow.tracking import MlflowClient, get_tracking_uri

from ..model.checkpoint import WEIGHTS_NAME, CheckpointError, CheckpointNotFound
from ..tracking.registry import (Registry, RegistrationUnreadable, integrity_problems, read_registration,
                                 version_files)
from .candles import valid_candles
from .generation import GenerationStopped
from .horizon import future_timestamps
from .package_layout import TIMESTAMP_COLUMN
from .packaged import load_predictor
from .predictor import KronosPredictor
from .requests import (PARAMS, Limits, RequestRefused, Served, Slots, check_forecast, check_param_types, check_params,
                       read_history, stopper)

# mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH: set (to the model's folder) in the process that
# `mlflow models serve` starts (importing that module here would load FastAPI into every load_model).
SERVER_MODEL_PATH = "__pyfunc_model_path__"


class NotServed(MlflowException):
    """A package this loader will not serve; its message is one sentence naming why."""


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


def _check_params_first() -> None:
    """MLflow checks a request's params against the signature's types before any model code runs,
    drops undeclared ones with only a warning, and its refusal begins with the whole input frame.
    This puts requests.check_param_types in front of that check, for this package's params only
    (a signature declaring pred_len and nothing but PARAMS), so each bad or unknown param is refused
    with one sentence. Installed once per process, by the first package loaded."""
    module = importlib.import_module("mlflow.pyfunc")
    enforce = getattr(module, "_enforce_params_schema", None)
    if enforce is None or getattr(enforce, "kronos_checked", False):
        return

    def checked(params, schema):
        names = {spec.name for spec in getattr(schema, "params", None) or []}
        if "pred_len" in names and names <= set(PARAMS):
            try:
                check_param_types(params, names)
            except RequestRefused as refused:
                raise Refusal(refused) from None
        return enforce(params, schema)

    checked.kronos_checked = True
    module._enforce_params_schema = checked


def server_stopping() -> bool:
    """Whether uvicorn (what ``mlflow models serve`` runs) got SIGTERM: its handler is the bound
    ``Server.handle_exit``, which sets ``should_exit`` and then waits for requests in flight."""
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


class ServedModel:
    """pyfunc: one series' history (a timestamp column and open, high, low, close[, volume, amount],
    named as a training CSV may name them) -> its forecast (``timestamps`` + the six columns).
    Params: pred_len, T, top_p, top_k, sample_count, freq (of the future timestamps; empty = the
    history's median step), seed (-1 = none), raw_candles (false: valid bars, forecasting.candles;
    true: the model's raw bars). What it refuses: forecasting.requests."""

    def __init__(self, predictor: KronosPredictor, limits: Limits):
        self.predictor, self.limits, self.slots = predictor, limits, Slots(limits)
        Served.limits = limits
        _check_params_first()

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return self._forecast(model_input, params or {})
        except RequestRefused as refused:
            raise Refusal(refused) from None

    def _forecast(self, model_input: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        config = self.predictor.model.config
        sampling = check_params(params, self.limits, 2 ** max(config["s1_bits"], config["s2_bits"]))
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


def load_served(root: Path, model_config: dict[str, Any] | None) -> ServedModel:
    """The predictor in ``root``, once every file of it is that of a version registered as its
    registration file says (which names the model and fingerprint, not the version: the folder may
    be a copy, the source folder itself, or MLflow's download of a models:/ URI)."""
    try:
        name, fingerprint = read_registration(root)
    except RegistrationUnreadable as err:
        raise NotServed(f"{root} is not served: {err}; serve a version kronos_exp registered: "
                        "models:/kronos-predictor/<version> (or @<alias>)") from None
    try:
        found = Registry(MlflowClient()).tagged(name, fingerprint)  # newest first
    except Exception as err:  # another store, an unreachable server
        raise NotServed(f"{root} is not served: the versions of {name} cannot be looked up in the registry at "
                        f"{get_tracking_uri()} to check its files ({str(err).splitlines()[0]})") from None
    if not found:
        raise NotServed(f"{root} is not served: no version of {name} with fingerprint {fingerprint[:12]} is "
                        f"registered at {get_tracking_uri()} (deleted, or another store), so nothing says which "
                        "digests its files must have")
    files = version_files(root)
    problems = {v.version: integrity_problems(root, v.tags, files) for v in found}
    intact = [v for v in found if not problems[v.version]]
    if not intact:  # said of the version with its weights, else the newest
        meant = next((v for v in found if v.tags.get("sha256") == files.get(WEIGHTS_NAME)), found[0])
        raise NotServed(f"{name} v{meant.version} at {root} is not the registered version "
                        f"({problems[meant.version][0]}), so nothing of it was loaded: python -m "
                        f"kronos_exp.forecasting verify models:/{name}/{meant.version} lists every file that differs")
    try:
        predictor = load_predictor(root)
    except (CheckpointError, CheckpointNotFound, OSError) as err:
        raise NotServed(f"{name} v{intact[0].version} at {root} is not a usable packaged predictor: {err}") from None
    return ServedModel(predictor, Limits.from_mapping((model_config or {}).get("limits")))


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> ServedModel:
    """MLflow's entry (``loader_module``): ``data_path`` is the package's folder (its MLmodel names no
    ``data``). In the scoring server a package refused is one ``error:`` line in its log and the
    server's exit, rather than a traceback through uvicorn's import of the app."""
    try:
        return load_served(Path(data_path), model_config)
    except NotServed as refused:
        if not os.environ.get(SERVER_MODEL_PATH):
            raise
        from uvicorn.config import STARTUP_FAILURE  # so `--workers N` stops too, rather than restarting workers

        print(f"error: {refused.message}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None
