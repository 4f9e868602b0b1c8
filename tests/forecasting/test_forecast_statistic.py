"""The forecast CSV and its fan chart show one statistic of the sampled paths, and say which: the
mean (the point forecast the evaluation scores and the served model returns)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from harness import PARITY, forecast_command
from kronos_exp.data import FEATURES, load_series, sample_path
from kronos_exp.forecasting.plots import fan_chart, figure
from kronos_exp.forecasting.pyfunc import load_predictor, package
from kronos_exp.forecasting.sampling import sample_paths
from kronos_exp.train.state import seed_everything
from kronos_exp.window import WindowSpec

CLOSE = FEATURES.index("close")


def test_the_csv_close_is_the_line_the_fan_chart_draws_and_both_say_mean(tmp_path: Path):
    shutil.copytree(PARITY / "predictor", tmp_path / "model")
    package(tmp_path / "model", PARITY / "tokenizer", WindowSpec(horizon=16, max_context=512))
    prices = pd.read_csv(sample_path())
    prices[prices.symbol == "ACME"].drop(columns=["symbol"]).tail(40).to_csv(tmp_path / "p40.csv", index=False)

    done = forecast_command(tmp_path, "model=model", "data.path=p40.csv", "lookback=40", "pred_len=6",
                            "sample_count=8", "raw=true", "out=f.csv")
    assert done.returncode == 0, done.stderr[-2000:]
    written = pd.read_csv(tmp_path / "f.csv")

    # The paths the command drew (its default seed, the same calls).
    (history,) = load_series({"path": str(tmp_path / "p40.csv")})
    predictor = load_predictor(tmp_path / "model")
    seed_everything(0)
    paths = sample_paths(predictor, [pd.DataFrame(history.values, columns=list(FEATURES))],
                         [pd.Series(history.timestamps)], [pd.Series(pd.to_datetime(written["timestamps"]))], 6,
                         sample_count=8)[0, :, :, CLOSE]  # [S, H]
    assert not np.allclose(np.median(paths, axis=0), paths.mean(axis=0))  # the two statistics differ here
    np.testing.assert_allclose(written["close"], paths.mean(axis=0))

    ax = figure().subplots()
    fan_chart(ax, history.values[:, CLOSE], paths)
    (line,) = [line for line in ax.get_lines() if line.get_label().endswith("forecast")]
    np.testing.assert_allclose(line.get_ydata(), written["close"])
    assert line.get_label() == "mean forecast"
    assert "the mean of 8 sampled paths" in done.stdout
