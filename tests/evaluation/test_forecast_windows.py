"""Each forecaster of an evaluation normalises with the window its predictor was trained with
(window.json beside the checkpoint), not the run's: a model trained with clip 2 is evaluated with
clip 2; the published weights keep their defaults but see the evaluated model's history rows."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kronos_exp.errors import ConfigError
from kronos_exp.evaluation.evaluate import Models, forecast_windows
from kronos_exp.evaluation.report import MODEL, PRETRAINED, describe
from kronos_exp.window import WindowSpec

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
PUBLISHED = (str(PARITY / "predictor"), str(PARITY / "tokenizer"))


def _trained(tmp_path: Path, window: WindowSpec) -> Path:
    folder = tmp_path / "predictor"
    shutil.copytree(PARITY / "predictor", folder)
    window.save(folder)
    return folder


def test_the_model_is_evaluated_with_the_window_it_was_trained_with(tmp_path):
    trained = WindowSpec(lookback=48, horizon=16, clip=2.0, max_context=256)
    models = Models(_trained(tmp_path, trained), PARITY / "tokenizer", "v1", published=PUBLISHED)
    windows = forecast_windows(models, history_rows=64)
    assert windows[MODEL] == trained
    assert windows[PRETRAINED] == WindowSpec(lookback=48)  # published defaults (clip 5, 512), the same rows
    assert describe(windows[MODEL]) == "lookback 48, clip 2.0, max_context 256"


def test_a_published_checkpoint_keeps_the_published_defaults():
    windows = forecast_windows(Models(PARITY / "predictor", PARITY / "tokenizer", "parity"), history_rows=64)
    assert windows == {MODEL: WindowSpec()}
    assert describe(windows[MODEL]) == "lookback all rows, clip 5.0, max_context 512"


def test_a_lookback_longer_than_the_runs_history_is_refused(tmp_path):
    models = Models(_trained(tmp_path, WindowSpec(lookback=128, clip=2.0)), PARITY / "tokenizer", "v3")
    with pytest.raises(ConfigError, match="v3 was trained on 128 rows of history.*data.lookback_window=64; "
                                          "set data.lookback_window=128"):
        forecast_windows(models, history_rows=64)
