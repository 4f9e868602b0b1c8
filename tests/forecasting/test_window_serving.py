"""A packaged predictor forecasts as it was trained to see: the window it was packaged with (clip,
lookback, max_context) is in its MLmodel and window.json, and load_predictor, the served pyfunc
model and the forecast command normalise with it rather than with the published defaults."""
from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from kronos_exp.forecasting import KronosPredictor, pyfunc
from kronos_exp.forecasting.cli import ForecastError, resolve_lookback
from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.model.checkpoint import CheckpointError
from kronos_exp.window import WindowSpec
from test_package_flavor import register

WINDOW = WindowSpec(lookback=24, horizon=4, clip=2.0, max_context=64)
PRED_LEN = 4
TINY_TOKENIZER = dict(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, ffn_dropout_p=0.0,
                      attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4, beta=0.05, gamma0=1.0,
                      gamma=1.1, zeta=0.05, group_size=4)
TINY_PREDICTOR = dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=16, n_heads=2, ff_dim=32, ffn_dropout_p=0.0,
                      attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> tuple[Path, Kronos, KronosTokenizer]:
    """A tiny random predictor packaged with WINDOW (window.json written first, as the runner does)."""
    root = tmp_path_factory.mktemp("packaged")
    torch.manual_seed(0)
    tokenizer, model = KronosTokenizer(**TINY_TOKENIZER), Kronos(**TINY_PREDICTOR)
    tokenizer.save_pretrained(root / "tokenizer")
    model.save_pretrained(root / "predictor")
    WINDOW.save(root / "predictor")
    pyfunc.package(root / "predictor", root / "tokenizer", WINDOW)
    return root / "predictor", model, tokenizer


def history(rows: int = 100) -> tuple[pd.DataFrame, pd.Series]:
    """OHLCV with spikes, a few in the last 24 rows: there a lone outlier is at most sqrt(23) < 5 std from
    the mean, so clip 2 cuts it and clip 5 does not."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    open_ = np.r_[close[0], close[:-1]]
    volume = rng.uniform(900, 1100, rows)
    volume[[10, 40, 90]] *= 50
    high, low = np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998
    high[[30, 80, 92]] *= 1.1
    low[[60, 85]] *= 0.9
    df = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume})
    return df, pd.Series(pd.date_range("2024-01-01", periods=rows, freq="h"))


def forecast(predictor: KronosPredictor, df: pd.DataFrame, stamps: pd.Series) -> np.ndarray:
    future = pd.Series(pd.date_range(stamps.iloc[-1] + pd.Timedelta("1h"), periods=PRED_LEN, freq="h"))
    (out,) = predictor.forecast_batch([df], [stamps], [future], PRED_LEN, sample_count=2, verbose=False,
                                      generator=torch.Generator().manual_seed(0))
    return out.to_numpy()


def test_the_mlmodel_carries_the_window_in_a_kronos_flavor(packaged):
    folder, _, _ = packaged
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert mlmodel["flavors"]["kronos"]["window"] == {"lookback": 24, "horizon": 4, "clip": 2.0, "max_context": 64}
    assert mlmodel["flavors"]["python_function"]["config"].keys() == {"limits"}  # no loose max_context
    assert WindowSpec.load(folder) == WINDOW
    assert '"name": "pred_len", "default": 4' in mlmodel["signature"]["params"]  # window.horizon


def test_load_predictor_normalises_as_the_model_was_trained(packaged):
    folder, model, tokenizer = packaged
    loaded = pyfunc.load_predictor(folder, device="cpu")
    assert (loaded.clip, loaded.max_context, loaded.lookback) == (2.0, 64, 24)
    df, stamps = history()
    got = forecast(loaded, df, stamps)
    trained = KronosPredictor(model, tokenizer, device="cpu", clip=2, max_context=64)
    np.testing.assert_array_equal(got, forecast(trained, df.tail(24), stamps.tail(24)))
    published = KronosPredictor(model, tokenizer, device="cpu")  # clip 5 over the whole history
    assert not np.allclose(got, forecast(published, df, stamps))
    # each part of the window matters on this data: the lookback, and the clip alone
    assert not np.allclose(got, forecast(trained, df, stamps))
    clip5 = KronosPredictor(model, tokenizer, device="cpu", clip=5, max_context=64)
    assert not np.allclose(got, forecast(clip5, df.tail(24), stamps.tail(24)))


def test_the_served_model_forecasts_with_the_trained_window(packaged, tmp_path):
    """As the server loads it: registered, through the installed loader (which serves only a version)."""
    folder, model, tokenizer = packaged
    df, stamps = history()
    store, _ = register(tmp_path, folder)
    mlflow.set_tracking_uri(store)
    served = mlflow.pyfunc.load_model("models:/kronos-predictor/1").predict(
        df.assign(timestamps=stamps), params={"pred_len": PRED_LEN, "seed": 0, "sample_count": 2, "raw_candles": True})
    trained = KronosPredictor(model, tokenizer, device="cpu", clip=2, max_context=64)
    np.testing.assert_array_equal(served.drop(columns="timestamps").to_numpy(),
                                  forecast(trained, df.tail(24), stamps.tail(24)))


def test_the_forecast_command_uses_the_trained_lookback_and_refuses_another(packaged):
    folder, model, tokenizer = packaged
    loaded = pyfunc.load_predictor(folder, device="cpu")
    assert resolve_lookback(None, loaded, "m") == 24 and resolve_lookback(24, loaded, "m") == 24
    for asked in (12, 48):
        with pytest.raises(ForecastError, match=f"^lookback={asked}, but model=m was trained normalising over 24 "
                                                "rows of history; leave lookback out"):
            resolve_lookback(asked, loaded, "m")
    published = KronosPredictor(model, tokenizer, device="cpu")
    assert resolve_lookback(None, published, "m") == 512 and resolve_lookback(48, published, "m") == 48


def test_older_packages_fall_back_to_window_json_then_the_published_defaults(packaged, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(packaged[0], folder)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    del mlmodel["flavors"]["kronos"]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    assert pyfunc.load_predictor(folder, device="cpu").lookback == 24  # window.json
    (folder / "window.json").unlink()
    loaded = pyfunc.load_predictor(folder, device="cpu")
    assert (loaded.clip, loaded.max_context, loaded.lookback) == (5.0, 512, None)


def test_a_hostile_kronos_flavor_is_a_checkpoint_error(packaged, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(packaged[0], folder)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["kronos"]["window"]["clip"] = True
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(CheckpointError, match=r"flavors\.kronos\.window\): clip=true; valid: a finite number > 0"):
        pyfunc.load_predictor(folder, device="cpu")


def test_packaging_refuses_a_window_json_that_says_otherwise(tmp_path):
    torch.manual_seed(0)
    KronosTokenizer(**TINY_TOKENIZER).save_pretrained(tmp_path / "tokenizer")
    Kronos(**TINY_PREDICTOR).save_pretrained(tmp_path / "predictor")
    WindowSpec(lookback=48, horizon=4).save(tmp_path / "predictor")
    with pytest.raises(ValueError, match="window.json holds .*'lookback': 48.*not the window being packaged"):
        pyfunc.package(tmp_path / "predictor", tmp_path / "tokenizer", WINDOW)
    assert not (tmp_path / "predictor" / "MLmodel").exists()
