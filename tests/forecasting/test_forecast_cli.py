"""The forecast command (``python -m kronos_exp.forecasting``, run in this process): its settings and
files: each bad one is one `error:` line and exit status 1, a lookback longer than the history is
said once, the bars it writes pass the loader's checks (raw=true: the predictor's own). One packaged
predictor (the tiny parity checkpoints) serves most tests here; a registered one (the session's
trained store) the last."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import Outcome, forecast_command
from kronos_exp.data import FEATURES, DataError, load_series, sample_path
from kronos_exp.forecasting.candles import valid_candles
from kronos_exp.forecasting.pyfunc import load_predictor, package
from kronos_exp.train.state import seed_everything
from kronos_exp.window import WindowSpec

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A packaged predictor, a 40-row and a 1-row CSV of one series."""
    root = tmp_path_factory.mktemp("forecast")
    shutil.copytree(PARITY / "predictor", root / "model")
    package(root / "model", PARITY / "tokenizer", WindowSpec(horizon=16, max_context=512))
    prices = pd.read_csv(sample_path())
    prices = prices[prices.symbol == "ACME"].drop(columns=["symbol"])
    prices.tail(40).to_csv(root / "p40.csv", index=False)
    prices.tail(1).to_csv(root / "p1.csv", index=False)
    return root


def forecast(folder: Path, *args: str) -> Outcome:
    """``python -m kronos_exp.forecasting model=model pred_len=2 sample_count=2 <args>`` in ``folder``, run
    in this process (its exit status and one-line errors through the real command: tests/e2e/test_eval.py)."""
    return forecast_command(folder, "model=model", "pred_len=2", "sample_count=2", *args)


@pytest.mark.parametrize("args, message", [
    (["data.path=p1.csv"], "p1.csv: series 'p1' has 1 row; the spacing of its forecast timestamps cannot be "
                           "inferred from it: add rows, or set freq= (e.g. freq=5min)"),
    (["data.path=p40.csv", "freq=banana"], "freq=banana is not a pandas frequency; use e.g. freq=5min, 1h, 1D or 1W"),
    (["data.path=p40.csv", "out=p40.csv/forecast.csv"], "cannot write out=p40.csv/forecast.csv (p40.csv: File exists)"),
    (["data.path=p40.csv", "out=."], "cannot write out=. (it is a folder)"),
    (["data.path=p40.csv", "T=nan"], "T=nan; valid: a finite number > 0"),
    (["data.path=p40.csv", "top_p=0"], "top_p=0; valid: a finite number in (0, 1]"),
    (["data.path=p40.csv", "top_k=-1"], "top_k=-1; valid: an integer >= 0"),
    (["data.path=p40.csv", "lookback=1.5"], "lookback=1.5; valid: an integer >= 2"),
    (["data.path=p40.csv", "raw=yes"], "raw=yes; valid: true (the model's raw bars) or false (valid bars)"),
])
def test_a_bad_setting_or_file_is_one_line(folder, args, message):
    proc = forecast(folder, *args)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]], proc.stderr[-3000:]
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr[-3000:]


def test_a_lookback_longer_than_the_history_is_said_once_and_the_history_used(folder):
    proc = forecast(folder, "data.path=p40.csv", "lookback=100", "out=short.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "lookback" in line]
    assert warnings == ["warning: lookback=100 is longer than the history of 1 series ('p40': 40 rows); their whole "
                        "history is used"], proc.stderr[-3000:]
    assert len(pd.read_csv(folder / "short.csv")) == 2


def test_the_forecast_is_bars_the_loader_accepts_and_raw_true_the_predictors_own(folder):
    for raw in ("false", "true"):
        proc = forecast(folder, "data.path=p40.csv", "lookback=40", "pred_len=16", "sample_count=1",
                        f"raw={raw}", f"out=bars_{raw}.csv")
        assert proc.returncode == 0, proc.stderr[-3000:]
    bars = load_series({"path": str(folder / "bars_false.csv"), "symbol_column": "series"})  # data.checks pass
    assert len(bars) == 1 and bars[0].values.shape == (16, len(FEATURES))
    with pytest.raises(DataError, match="inconsistent"):  # the tiny model's raw bars are not valid ones
        load_series({"path": str(folder / "bars_true.csv"), "symbol_column": "series"})

    (history,) = load_series({"path": str(folder / "p40.csv")})
    raw = pd.read_csv(folder / "bars_true.csv")
    predictor = load_predictor(folder / "model")
    seed_everything(0)  # the command's default seed
    expected = predictor.predict(
        pd.DataFrame(history.values, columns=list(FEATURES)), pd.Series(history.timestamps),
        pd.Series(pd.to_datetime(raw["timestamps"])), 16, verbose=False)
    np.testing.assert_array_equal(raw[list(FEATURES)].to_numpy(), expected.to_numpy(dtype=np.float64))
    valid = pd.read_csv(folder / "bars_false.csv")
    pd.testing.assert_frame_equal(valid, valid_candles(raw))


def test_forecast_command_errors_are_one_line(trained_store, tmp_path):
    """A registered model the store does not have, a bad CSV, a store that is not there, a server that
    does not answer: one `error:` line each (the first through the real command: tests/e2e/test_eval.py)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamps,open,high,low\n2024-01-01,1,2,0.5\n")
    cases = [
        ("models:/kronos-predictor/9", None, "kronos-predictor, version=9"),
        ("models:/kronos-predictor/1", None, "bad.csv"),
        ("models:/kronos-predictor/1", f"sqlite:///{tmp_path}/none.db", "no MLflow store"),
        ("models:/kronos-predictor/1", f"http://127.0.0.1:{port}", "cannot load model=models:/kronos-predictor/1 from http://"),
    ]
    for model, store, message in cases:
        proc = forecast_command(tmp_path, f"model={model}", f"data.path={bad}",
                                f"tracking_uri={store or trained_store.tracking_uri}")
        assert proc.returncode == 1
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().startswith("error:")
