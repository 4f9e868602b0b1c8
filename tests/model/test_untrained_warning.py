"""Weights that were never trained (every norm weight exactly 1, as a fresh model starts) load with a
one-line warning naming their folder; trained ones load without a word."""
from __future__ import annotations

import json
import logging

import pytest

from harness import PARITY
from kronos_exp.model import Kronos, KronosTokenizer


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("cls, name", [(Kronos, "predictor"), (KronosTokenizer, "tokenizer")])
def test_freshly_initialised_weights_load_with_a_warning_naming_them(cls, name, tmp_path, caplog):
    fresh = cls.from_config(json.loads((PARITY / name / "config.json").read_text()))
    fresh.save_pretrained(tmp_path / name)
    with caplog.at_level(logging.WARNING):
        cls.from_pretrained(tmp_path / name)
    (line,) = _warnings(caplog)
    assert str(tmp_path / name) in line and "untrained" in line and "\n" not in line


@pytest.mark.parametrize("cls, name", [(Kronos, "predictor"), (KronosTokenizer, "tokenizer")])
def test_trained_weights_load_without_a_word(cls, name, caplog):
    with caplog.at_level(logging.WARNING):
        cls.from_pretrained(PARITY / name)
    assert _warnings(caplog) == []
