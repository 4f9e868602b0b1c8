"""The served predictor as a client meets it: a real `mlflow models serve` of a packaged, registered
predictor (the parity fixture's models, so no training), one server for the module, many requests.
Bad requests get a 4xx naming the problem (a forecast that is not finite: 422), seeded requests
repeat under load, answers are bars the loader accepts (raw_candles=true: the predictor's own), a
long request is stopped, and SIGTERM stops the server mid-request; a planted package file runs
nowhere but where MLflow obeys an edited MLmodel (what the verify command catches)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from kronos_exp.data import FEATURES, DataError, load_series, sample_path
from kronos_exp.forecasting.candles import valid_candles
from kronos_exp.forecasting import pyfunc
from kronos_exp.forecasting.requests import Limits
from kronos_exp.forecasting.served_model import Refusal
from kronos_exp.tracking import Registry, Tracker, folder_digests
from kronos_exp.tracking.registry import write_registration
from kronos_exp.window import WindowSpec
from harness import forecast_command
from model_server import ModelServer

pytestmark = pytest.mark.e2e

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
FINGERPRINT = "f0" * 32  # what the phase run that registered it would have computed
# max_concurrent=4: the concurrency test runs four at once (tests/e2e/test_serving_limits.py: fewer)
LIMITS = Limits(max_pred_len=1000, max_sample_count=4, max_history_rows=300, timeout_s=60.0, max_concurrent=4)
LONG = dict(pred_len=1000, sample_count=4, seed=0)  # seconds of work on 2 idle CPU cores (the window slides)
YAHOO = {"timestamps": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"}


def parity_window() -> WindowSpec:
    """The parity checkpoints' window: published normalisation (whole history, clip 5), their max_context."""
    return WindowSpec(horizon=8, max_context=json.loads((PARITY / "meta.json").read_text())["max_context"])


def register_packaged_predictor(root: Path, limits: Limits = LIMITS, window: WindowSpec | None = None) -> str:
    """The parity predictor packaged with its tokenizer (in ``root/predictor``) and registered as
    kronos-predictor v1 in a SQLite store under ``root``; returns the store's URI."""
    folder = root / "predictor"
    shutil.copytree(PARITY / "predictor", folder)
    pyfunc.package(folder, PARITY / "tokenizer", window or parity_window(), limits)
    write_registration(folder, "kronos-predictor", FINGERPRINT)  # as a phase run does before registering
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "serving")
    with mlflow.start_run(experiment_id=tracker.experiment_id) as run:
        mlflow.log_artifacts(str(folder), "checkpoint")
    Registry(tracker.client).register("kronos-predictor", run.info.run_id, "checkpoint", folder_digests(folder),
                                      FINGERPRINT, tags={})
    mlflow.set_tracking_uri(None)
    return uri


def history(rows: int = 64) -> pd.DataFrame:
    df = pd.read_csv(sample_path())
    return df[df["symbol"] == "ACME"].tail(rows).drop(columns=["symbol"]).reset_index(drop=True)


class Payload:
    """Unpickled, it creates the folder ``marker``: the planted code's proof of running."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _plant_pickle(stored: Path, marker: Path) -> None:
    """A python_model.pkl that an edited MLmodel now loads instead of the installed loader, as an
    attacker with write access to the artifact store would plant it."""
    import cloudpickle
    import yaml

    (stored / "python_model.pkl").write_bytes(cloudpickle.dumps(Payload(marker)))
    mlmodel = yaml.safe_load((stored / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    flavor.update(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl")
    (stored / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def _plant_code(stored: Path, marker: Path) -> None:
    """Model code beside the data, as packages made before the kronos flavor held it."""
    (stored / "served_model.py").write_text(f"import os\nos.mkdir({str(marker)!r})\n")


@pytest.mark.parametrize("plant", [_plant_pickle, _plant_code])
def test_a_planted_package_file_runs_no_code_on_reuse_or_forecast(tmp_path, plant, caplog):
    store = register_packaged_predictor(tmp_path)
    client = mlflow.MlflowClient(store)
    stored = Path(urlparse(client.get_model_version("kronos-predictor", "1").source).path)
    marker = tmp_path / "ran"
    mlflow.set_tracking_uri(store)
    mlflow.artifacts.download_artifacts("models:/kronos-predictor/1")  # MLflow adds registered_model_meta
    assert Registry(client).fetch("kronos-predictor", FINGERPRINT, tmp_path / "intact") is not None
    plant(stored, marker)

    with caplog.at_level(logging.WARNING):
        assert Registry(client).fetch("kronos-predictor", FINGERPRINT, tmp_path / "reused") is None  # skip_existing
    mlflow.set_tracking_uri(None)
    assert "kronos-predictor v1 is not reused: " in caplog.text
    history().to_csv(tmp_path / "prices.csv", index=False)
    proc = forecast_command(tmp_path, "model=models:/kronos-predictor/1", "data.path=prices.csv",
                            f"tracking_uri={store}")  # the command, in this process
    assert proc.returncode == 1 and not marker.exists()
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]  # one line
    assert proc.stderr.startswith("error: model=models:/kronos-predictor/1 is not a usable")
    assert "is not the registered predictor" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "forecast.csv").exists()

    mlflow.set_tracking_uri(store)
    with contextlib.suppress(Exception):
        mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    mlflow.set_tracking_uri(None)
    # Planted code beside the data runs nowhere: the installed loader refuses the version. An edited
    # MLmodel is a real attack: MLflow itself obeys it before any check (docs/serving.md: verify first).
    assert marker.exists() == (plant is _plant_pickle)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    server = ModelServer(root, register_packaged_predictor(root))
    yield server
    server.stop()


def _with(frame: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    frame = frame.copy()
    for column, value in values.items():
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    return frame


BAD = {  # request -> what the answer must name
    "pred_len=100000": (history(), {"pred_len": 100000}, "pred_len=100000 is out of range"),
    "pred_len=0": (history(), {"pred_len": 0}, "pred_len=0 is out of range"),
    "sample_count=10000": (history(), {"sample_count": 10000}, "sample_count=10000 is out of range"),
    "T=-1": (history(), {"T": -1}, "T=-1"),
    "T=0": (history(), {"T": 0}, "T=0"),
    "T=1e308 * 10": (history(), {"T": 1e308 * 10}, "T=inf"),
    "top_p=-1": (history(), {"top_p": -1}, "top_p=-1"),
    "top_p=1.5": (history(), {"top_p": 1.5}, "top_p=1.5"),
    "top_k=1e9": (history(), {"top_k": 1000000000}, "top_k=1000000000"),
    "top_k=-1": (history(), {"top_k": -1}, "top_k=-1"),
    "seed=2**70": (history(), {"seed": 2 ** 70}, "param seed=1180591620717411303424 is out of range: it must be -1 "
                   "(unseeded) or an integer from 0 to 2**63 - 1"),
    "seed=-5": (history(), {"seed": -5}, "param seed=-5 is out of range"),
    "pred_len='abc'": (history(), {"pred_len": "abc"}, "param pred_len='abc' is not valid: it must be an integer"),
    "pred_len='3'": (history(), {"pred_len": "3"}, "param pred_len='3' is not valid: it must be an integer"),
    "pred_len=3.5": (history(), {"pred_len": 3.5}, "param pred_len=3.5 is not valid: it must be an integer"),
    "T='hot'": (history(), {"T": "hot"}, "param T='hot' is not valid: it must be a number"),
    "T=10**400": (history(), {"T": 10 ** 400}, f"param T={str(10 ** 400)[:37]}... is not valid: it must be a number"),
    "raw_candles='yes'": (history(), {"raw_candles": "yes"}, "param raw_candles='yes' is not valid: it must be true"),
    "freq=5": (history(), {"freq": 5}, "param freq=5 is not valid: it must be a string"),
    "seed=[1]": (history(), {"seed": [1]}, "param seed=[1] is not valid: it must be an integer"),
    "an unknown param": (history(), {"temprature": 0.5}, "unknown param(s) temprature"),
    "a negative price": (_with(history(), 5, close=-3.0), {}, "price -3 is not positive"),
    "a price of 1e300": (_with(history(), 5, close=1e300, high=1e300), {}, "value 1e+300 is too large"),
    "a missing column": (history().drop(columns=["close"]), {}, "missing required column(s) close"),
    "strings": (_with(history(), 2, open="abc"), {}, "'abc' is not a number"),
    "no rows": (history().iloc[:0], {}, "no data rows"),
    "too many rows": (history(400), {}, "the history has 400 rows; this model takes at most 300"),
    "one row and no freq": (history(1), {}, "needs at least two increasing timestamps"),
    "a bad freq": (history(), {"freq": "banana"}, "cannot make the forecast's timestamps"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_gets_a_4xx_that_names_the_problem_at_once(server, case):
    frame, params, named = BAD[case]
    status, body, seconds = server.ask(frame, **{"pred_len": 4, **params})
    assert 400 <= status < 500, (status, body[:500])
    message = json.loads(body)["message"]
    assert named in message and seconds < 5, (message, seconds)
    assert len(message) < 400 and "Failed to predict" not in message  # the reason, not the input echoed
    assert "\n" not in message and "2024-" not in message  # one sentence; no row of the history


def test_a_forecast_that_is_not_finite_is_a_422(server):
    """Prices the checks accept (1e30 < float32's 3.4e38) that overflow the model's arithmetic."""
    huge = history()
    huge[["open", "high", "low", "close"]] *= 1e30
    status, body, _ = server.ask(huge, pred_len=4, seed=0)
    assert status == 422 and json.loads(body)["message"].startswith("the forecast is not finite:"), (status, body)


def test_yahoo_columns_are_read_as_training_reads_them(server):
    yahoo = history().drop(columns=["amount"]).rename(columns=YAHOO)
    status, body, _ = server.ask(yahoo, pred_len=4, seed=3)
    assert status == 200, body[:1000]
    plain = server.ask(history().drop(columns=["amount"]), pred_len=4, seed=3)
    assert plain[0] == 200 and json.loads(body) == json.loads(plain[1])
    assert len(json.loads(body)["predictions"]) == 4


def test_the_packaged_input_example_is_saved_and_served(server):
    """Each packaged model keeps MLflow's input example (a small valid history, issue 28 item 5), and
    the request body MLflow derives from it gets a forecast from the served model: 200, the window's
    horizon (8) of rows."""
    folder = Path(server.log.name).parent / "predictor"
    example = mlflow.models.Model.load(str(folder)).load_input_example(str(folder))
    assert list(example.columns) == ["timestamps", *FEATURES] and len(example) == pyfunc.EXAMPLE_ROWS
    pd.testing.assert_frame_equal(example, pyfunc.input_example(), check_dtype=False)
    request = urllib.request.Request(f"{server.url}/invocations", headers={"Content-Type": "application/json"},
                                     data=(folder / "serving_input_example.json").read_bytes())
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        assert len(json.loads(answer.read())["predictions"]) == 8


def test_concurrent_identical_seeded_requests_give_identical_answers(server):
    with ThreadPoolExecutor(4) as pool:
        busy = pool.submit(server.ask, history(), pred_len=48, sample_count=4, seed=-1)  # other work in flight
        time.sleep(0.2)
        answers = list(pool.map(lambda _: server.ask(history(), pred_len=12, sample_count=2, seed=0), range(3)))
        assert busy.result()[0] in (200, 504)
    assert [a[0] for a in answers] == [200] * 3, answers[0][1][:500]
    assert answers[0][1] == answers[1][1] == answers[2][1]
    assert "NaN" not in answers[0][1]
    json.loads(answers[0][1])


def _loads(forecast: pd.DataFrame, csv: Path) -> None:
    """Raises the loader's DataError unless ``forecast`` is bars data.checks accepts."""
    forecast.to_csv(csv, index=False)
    assert load_series({"path": str(csv)})[0].values.shape == (len(forecast), len(FEATURES))


def load_registered(store: str) -> mlflow.pyfunc.PyFuncModel:
    """kronos-predictor v1 of ``store`` as MLflow loads it in the server (the installed loader)."""
    mlflow.set_tracking_uri(store)
    try:
        return mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    finally:
        mlflow.set_tracking_uri(None)


def test_answers_are_valid_bars_and_raw_candles_the_predictors_own(tmp_path, server):
    """In process through the pyfunc model's predict (as the server calls it), then once over HTTP."""
    model = load_registered(register_packaged_predictor(tmp_path))  # packaged as the server's
    folder = tmp_path / "predictor"
    valid = model.predict(history(), params={"pred_len": 8, "seed": 0})
    raw = model.predict(history(), params={"pred_len": 8, "seed": 0, "raw_candles": True})
    _loads(valid, tmp_path / "valid.csv")
    with pytest.raises(DataError, match="inconsistent"):  # the tiny model's raw bars are not valid ones
        _loads(raw, tmp_path / "raw.csv")

    predictor = pyfunc.load_predictor(folder)
    torch.manual_seed(0)  # the request's seed=0
    expected = predictor.predict(
        history()[list(FEATURES)], pd.to_datetime(history()["timestamps"]), raw["timestamps"], 8, verbose=False)
    np.testing.assert_array_equal(raw[list(FEATURES)].to_numpy(), expected.to_numpy())
    pd.testing.assert_frame_equal(valid, valid_candles(raw))

    answers = [server.ask(history(), pred_len=8, seed=0, **params) for params in ({}, {"raw_candles": True})]
    assert [status for status, _, _ in answers] == [200, 200], answers[0][1][:500]
    served = [pd.DataFrame(json.loads(body)["predictions"])[list(FEATURES)] for _, body, _ in answers]
    np.testing.assert_allclose(served[0].to_numpy(), valid[list(FEATURES)].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(served[1].to_numpy(), raw[list(FEATURES)].to_numpy(), rtol=1e-6)


def test_a_request_past_the_time_limit_is_stopped(tmp_path):
    """In process (the scoring server calls the same predict): a package whose limit, 0.2 s, is far
    below the request's work."""
    model = load_registered(register_packaged_predictor(tmp_path, Limits(max_pred_len=1000, timeout_s=0.2),
                                                        WindowSpec(horizon=8, max_context=64)))
    start = time.monotonic()
    with pytest.raises(Refusal) as refused:
        model.predict(history(300), params=LONG)
    assert refused.value.get_http_status_code() == 504 and "limit of 0.2 s" in refused.value.message
    assert time.monotonic() - start < 5


def test_sigterm_mid_request_stops_the_server_promptly(server):
    """The module's last test: it stops the module's server (whose time limit, 60 s, would not end
    the request first)."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.ask, history(300), **LONG)
        time.sleep(0.5)  # the request is in flight
        assert not pending.done()
        os.killpg(server.proc.pid, signal.SIGTERM)
        start = time.monotonic()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server was still up 10 s after SIGTERM: {server.tail()}")
        assert time.monotonic() - start < 10
        status, body, _ = pending.result()
    assert status == 503 and json.loads(body)["message"] == "the server is shutting down"
