"""A request to the served predictor, checked before any work: its params of the kinds the package
declares (before MLflow's own check, whose refusal echoes the request) and inside the limits it
declares, its history read as training reads a CSV (the same column detection, positive
finite prices), its forecast finite, and at most ``max_concurrent`` forecasts at once (Slots). A
refusal is one sentence (RequestRefused)."""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import pandas as pd

from ..schemas import ServingConfig
from ..data import FEATURES, DataConfig, DataError
from ..data.reading import read_bytes
from ..errors import UserError

PARAMS = ("pred_len", "T", "top_p", "top_k", "sample_count", "freq", "seed", "raw_candles")
KINDS = {"pred_len": int, "T": float, "top_p": float, "top_k": int, "sample_count": int, "freq": str, "seed": int,
         "raw_candles": bool}  # what each param's JSON value must be (the signature's long, double, string, boolean)
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
BODY_BYTES_PER_ROW = 1000  # the default body limit per history row: a row of JSON takes about 250


class RequestRefused(UserError):
    """A request the served model will not answer; ``status`` is the HTTP status it gets."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask (config ``serving.*``, whose defaults these are, written into the
    package when it is made)."""
    max_pred_len: int = ServingConfig.max_pred_len
    max_sample_count: int = ServingConfig.max_sample_count
    max_history_rows: int = ServingConfig.max_history_rows
    timeout_s: float = ServingConfig.timeout_s
    max_body_mb: float | None = ServingConfig.max_body_mb  # None: BODY_BYTES_PER_ROW per history row
    max_concurrent: int = ServingConfig.max_concurrent
    queue_s: float = ServingConfig.queue_s

    def __post_init__(self) -> None:
        if self.max_body_mb is None:  # resolved here, so the package records the number it serves with
            object.__setattr__(self, "max_body_mb", max(1.0, self.max_history_rows * BODY_BYTES_PER_ROW / 1e6))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "Limits":
        """Limits from config or a package's model_config; a key it lacks (an older package) keeps its default."""
        fields = asdict(cls())
        return cls(**{k: type(fields[k])(v) for k, v in (values or {}).items() if k in fields and v is not None})


class Served:
    """The limits of the package this process serves (its load_context sets them): forecasting.body_limit
    refuses a body before MLflow's app, which holds the model, ever runs."""
    limits: ClassVar[Limits | None] = None


@dataclass(frozen=True)
class Sampling:
    pred_len: int
    T: float
    top_p: float
    top_k: int
    sample_count: int
    freq: str
    seed: int
    raw_candles: bool = False  # the model's bars as they come, not forecasting.candles.valid_candles


def _bounded(name: str, value: Any, ok: Callable[[float], bool], valid: str) -> None:
    """An int is compared as it is (2**63 - 1 as a float would be 2**63, 2**1100 would not convert)."""
    if isinstance(value, int):
        number: float = value
    else:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
    if not ((isinstance(number, int) or math.isfinite(number)) and ok(number)):
        raise RequestRefused(f"param {name}={value!r} is out of range: it must be {valid}")


def _of_kind(kind: type, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return kind is bool
    if kind is int:
        return isinstance(value, (int, np.integer))
    if kind is float and isinstance(value, (int, float, np.integer, np.floating)):
        try:
            float(value)
        except OverflowError:  # an int past float's range
            return False
        return True
    return isinstance(value, kind)


def check_param_types(params: Any, declared: set[str]) -> None:
    """The request's params as it sent them, before MLflow's own type check (whose refusal echoes the
    whole request): each one of the ``declared`` params, of its KINDS (an integer for pred_len, not
    "3" nor 3.5)."""
    if params is None:
        return
    if not isinstance(params, Mapping):
        raise RequestRefused(f"params must be an object of name: value pairs, not {type(params).__name__}")
    unknown = sorted(set(map(str, params)) - declared)
    if unknown:
        raise RequestRefused(f"unknown param(s) {', '.join(unknown)}; "
                             f"the params are {', '.join(p for p in PARAMS if p in declared)}")
    for name, value in params.items():
        if not _of_kind(KINDS[name], value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise RequestRefused(f"param {name}={shown} is not valid: it must be {_KIND_NAMES[KINDS[name]]}")


def check_params(params: Mapping[str, Any], limits: Limits, vocabulary: int) -> Sampling:
    """The request's params (of their kinds: check_param_types; MLflow filled in the declared
    defaults) as a Sampling."""
    _bounded("pred_len", params["pred_len"], lambda v: 1 <= v <= limits.max_pred_len,
             f"an integer from 1 to {limits.max_pred_len} (this model's limit)")
    _bounded("sample_count", params["sample_count"], lambda v: 1 <= v <= limits.max_sample_count,
             f"an integer from 1 to {limits.max_sample_count} (this model's limit)")
    _bounded("T", params["T"], lambda v: v > 0, "a finite temperature > 0")
    _bounded("top_p", params["top_p"], lambda v: 0 < v <= 1, "a number in (0, 1]")
    _bounded("top_k", params["top_k"], lambda v: 0 <= v <= vocabulary,
             f"an integer from 0 (off) to {vocabulary} (the vocabulary)")
    _bounded("seed", params["seed"], lambda v: v == -1 or 0 <= v < 2 ** 63,
             "-1 (unseeded) or an integer from 0 to 2**63 - 1")
    return Sampling(int(params["pred_len"]), float(params["T"]), float(params["top_p"]), int(params["top_k"]),
                    int(params["sample_count"]), str(params["freq"] or ""), int(params["seed"]),
                    bool(params.get("raw_candles", False)))  # absent from packages made before it


def read_history(model_input: pd.DataFrame, limits: Limits) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """The request's rows as training would read them from a CSV: (values in FEATURES order, timestamps)."""
    if len(model_input) > limits.max_history_rows:
        raise RequestRefused(f"the history has {len(model_input)} rows; this model takes at most "
                             f"{limits.max_history_rows} (send the latest ones)")
    try:
        ((_, series),) = read_bytes(model_input.to_csv(index=False).encode(), "the request", DataConfig())
    except DataError as err:
        raise RequestRefused(str(err)) from None
    return pd.DataFrame(series.values.astype(np.float64), columns=list(FEATURES)), pd.DatetimeIndex(series.timestamps)


def check_forecast(forecast: pd.DataFrame) -> pd.DataFrame:
    """A forecast with a non-finite value is refused rather than answered as NaN (not JSON)."""
    if not np.isfinite(forecast.to_numpy(dtype=np.float64)).all():
        raise RequestRefused("the forecast is not finite: the history's values are too large or too spread "
                             "for the model's float32 arithmetic; rescale them", status=422)
    return forecast


def stopper(limits: Limits, server_stopping: Callable[[], bool]) -> Callable[[], str]:
    """generation's ``stop``: why the token loop should end now ('' = go on)."""
    deadline = time.monotonic() + limits.timeout_s

    def stop() -> str:
        if time.monotonic() > deadline:
            return f"the request ran past this model's limit of {limits.timeout_s:g} s; ask for fewer steps or samples"
        return "the server is shutting down" if server_stopping() else ""
    return stop


class Slots:
    """At most ``max_concurrent`` forecasts at once. The scoring server runs each request in a thread
    of a small pool (6 on 2 cores), so long forecasts would take every thread and a light request
    would wait out their whole length; instead a request waits at most ``queue_s`` for a slot, then
    is refused (503) at once."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._free = threading.BoundedSemaphore(limits.max_concurrent)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if not self._free.acquire(timeout=self.limits.queue_s):
            raise RequestRefused(f"the model is busy: {self.limits.max_concurrent} forecast(s) are running, "
                                 "its limit (serving.max_concurrent); retry in a few seconds", status=503)
        try:
            yield
        finally:
            self._free.release()
