"""What a model was trained with is what it is evaluated and served with: a run with `data.clip=2`
and a 48-row lookback records that window with its checkpoints, and the eval step, the forecast
command and `mlflow models serve` of the registered version all normalise exactly as training did
(the last 48 rows, clipped at 2), not with the published defaults (clip 5, the whole history)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from harness import forecast_command
from kronos_exp.data.sample import sample_path
from kronos_exp.forecasting import KronosPredictor
from kronos_exp.forecasting.horizon import future_timestamps
from kronos_exp.forecasting.pyfunc import load_predictor
from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.window import WindowSpec
from model_server import ModelServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAINED = WindowSpec(lookback=48, horizon=8, clip=2.0, max_context=512)
SETTINGS = ["data.lookback_window=48", "data.predict_window=8", "data.clip=2", "data.max_train_windows=128",
            "data.max_eval_windows=48", "tokenizer.epochs=1", "predictor.epochs=1", "eval.windows=4",
            "eval.sample_count=2"]


@pytest.fixture(scope="module")
def run(module_pipeline):
    module_pipeline.run("phases=all", *SETTINGS, fast=False)
    folder = module_pipeline.root / "predictor_v1"
    module_pipeline.client().download_artifacts(module_pipeline.versions("kronos-predictor")[0].run_id,
                                                "checkpoint", str(folder))
    return module_pipeline, folder / "checkpoint"


def _history(rows: int = 100) -> pd.DataFrame:
    """The last ``rows`` bars of the bundled sample's first series, with a volume spike that the
    clip at 2 cuts and the published clip at 5 would not (so the two normalisations differ)."""
    frame = pd.read_csv(sample_path())
    first = frame[frame["symbol"] == frame["symbol"].iloc[0]].tail(rows).drop(columns="symbol").reset_index(drop=True)
    first.loc[rows - 3, "volume"] *= 40
    return first


def test_every_checkpoint_and_the_served_package_record_the_trained_window(run):
    store, predictor = run
    assert WindowSpec.load(predictor) == TRAINED
    mlmodel = yaml.safe_load((predictor / "MLmodel").read_text())
    assert mlmodel["flavors"]["kronos"]["window"] == TRAINED.to_dict()
    tokenizer_run = store.by_phase()["tokenizer"]
    folder = store.client().download_artifacts(tokenizer_run.info.run_id, "checkpoint", str(store.root / "tok"))
    assert WindowSpec.load(folder) == TRAINED


def test_the_eval_step_forecasts_with_the_trained_window(run):
    store, _ = run
    evaluation = store.by_phase()["eval"]
    assert evaluation.data.tags["eval_window"] == "lookback 48, clip 2.0, max_context 512"


def test_the_forecast_command_uses_the_trained_lookback_and_refuses_another(run, tmp_path):
    store, _ = run
    csv = tmp_path / "history.csv"
    _history().to_csv(csv, index=False)
    model = ["model=models:/kronos-predictor/1", f"data.path={csv}", "pred_len=4", f"tracking_uri={store.tracking_uri}"]
    other = forecast_command(tmp_path, *model, "lookback=64", f"out={tmp_path / 'other.csv'}")
    assert other.returncode == 1 and "48 rows" in other.stderr, other.output
    done = forecast_command(tmp_path, *model, f"out={tmp_path / 'forecast.csv'}")
    assert done.returncode == 0, done.output
    assert len(pd.read_csv(tmp_path / "forecast.csv")) == 4


def test_the_served_model_normalises_as_training_did(run, tmp_path):
    store, predictor = run
    history = _history()
    stamps = pd.to_datetime(history["timestamps"])
    future = future_timestamps(stamps, 4)

    def forecast(kronos: KronosPredictor) -> np.ndarray:
        generator = torch.Generator().manual_seed(7)
        (frame,) = kronos.forecast_batch([history.drop(columns="timestamps")], [stamps], [future], 4, verbose=False,
                                         generator=generator)
        return frame.to_numpy()

    trained = load_predictor(predictor)
    assert (trained.clip, trained.lookback, trained.max_context) == (2.0, 48, 512)
    expected = forecast(trained)
    published_defaults = forecast(KronosPredictor(Kronos.from_pretrained(predictor),
                                                  KronosTokenizer.from_pretrained(predictor / "artifacts" / "tokenizer")))
    assert not np.allclose(expected, published_defaults)  # the check can fail: the window matters here

    server = ModelServer(tmp_path, store.tracking_uri)
    try:
        status, body, _ = server.ask(history, pred_len=4, seed=7, raw_candles=True)
    finally:
        server.stop()
    assert status == 200, body
    served = pd.DataFrame(json.loads(body)["predictions"])
    np.testing.assert_allclose(served[["open", "high", "low", "close", "volume", "amount"]].to_numpy(), expected,
                               rtol=1e-5)
