"""The experiment presets (conf/experiment/) compose into valid runs, and the command line still
overrides what a preset sets."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import resolve

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("config", overrides=list(overrides))


def test_the_presets_the_manual_shows_are_there():
    assert {"smoke", "finetune_small_csv", "finetune_mini_csv"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_composes_into_a_valid_run(preset):
    # The published checkpoints the presets name are fetched from the hub; the parity fixture has their layout.
    fixture = Path(__file__).parent / "fixtures" / "parity"
    cfg = _compose(f"experiment={preset}", "data.path=prices.csv")
    pretrained = [f"{p}.pretrained={fixture / p}" for p in ("tokenizer", "predictor") if cfg[p].pretrained]
    resolve(_compose(f"experiment={preset}", "data.path=prices.csv", *pretrained))


@pytest.mark.parametrize("preset, model, tokenizer, schedule", [
    ("finetune_small_csv", "NeoQuasar/Kronos-small", "NeoQuasar/Kronos-Tokenizer-base", "OneCycleLR"),
    ("finetune_mini_csv", "NeoQuasar/Kronos-mini", "NeoQuasar/Kronos-Tokenizer-2k", "warmup_cosine"),
])
def test_the_fine_tuning_presets_start_from_published_weights_on_a_csv(preset, model, tokenizer, schedule):
    cfg = _compose(f"experiment={preset}", "data.path=prices.csv")
    assert (cfg.predictor.pretrained, cfg.tokenizer.pretrained, list(cfg.phases)) == (model, tokenizer, ["predictor"])
    assert cfg.data.path == "prices.csv" and cfg.data.symbol_column is None  # data=csv, not the sample
    assert cfg.predictor.scheduler._target_.endswith(schedule)


def test_the_command_line_overrides_a_preset_and_a_preset_overrides_the_defaults():
    assert _compose("experiment=smoke").device == "cpu"  # config.yaml says auto
    assert _compose("experiment=smoke", "device=auto", "tokenizer.epochs=2").tokenizer.epochs == 2
