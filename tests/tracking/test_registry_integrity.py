"""A registered checkpoint is reused only when every one of its files is the file registered."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest

from kronos_exp.model import KronosTokenizer
from kronos_exp.tracking import Registry, Tracker, folder_digests

ARCH = dict(d_in=6, d_model=8, n_heads=2, ff_dim=16, n_enc_layers=1, n_dec_layers=1, ffn_dropout_p=0.0,
            attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=2, s2_bits=2, beta=0.05, gamma0=1.0, gamma=1.1,
            zeta=0.05, group_size=4)


@pytest.fixture
def registered(tmp_path):
    """A real SQLite store with one registered tokenizer checkpoint; yields (registry, stored folder)."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "integrity")
    folder = KronosTokenizer(**ARCH).save_pretrained(tmp_path / "ckpt")
    with mlflow.start_run(experiment_id=tracker.experiment_id) as run:
        mlflow.log_artifacts(str(folder), "checkpoint")
    registry = Registry(tracker.client)
    version = registry.register("tok", run.info.run_id, "checkpoint", folder_digests(folder), "fp", tags={})
    yield registry, Path(urlparse(version.source).path)
    mlflow.set_tracking_uri(None)


def test_an_intact_version_is_reused(registered, tmp_path):
    registry, _ = registered
    hit = registry.fetch("tok", "fp", tmp_path / "reused")
    assert hit is not None
    KronosTokenizer.from_pretrained(hit[1])


@pytest.mark.parametrize("damage", ["truncate", "tamper", "delete"])
def test_a_damaged_config_is_not_reused_and_the_log_says_why(registered, tmp_path, caplog, damage):
    registry, stored = registered
    config = stored / "config.json"
    text = config.read_text()
    if damage == "truncate":
        config.write_text(text[: len(text) // 2])
    elif damage == "tamper":
        config.write_text(text.replace('"d_model": 8', '"d_model": 9'))
    else:
        config.unlink()
    with caplog.at_level(logging.WARNING):
        assert registry.fetch("tok", "fp", tmp_path / "reused") is None
    why = "config.json is missing" if damage == "delete" else "config.json differs from the registered file"
    assert why in caplog.text
