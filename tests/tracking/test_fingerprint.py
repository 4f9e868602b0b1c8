"""Fingerprints by content: what changes the trained weights changes the fingerprint, nothing else."""
from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import resolve
from kronos_exp.data import resolve_paths
from kronos_exp.data.digest import file_sha256
from kronos_exp.data.sample import sample_path
from kronos_exp.model import KronosTokenizer
from kronos_exp.tracking.fingerprint import (PACKAGE_ROOT, code_digest, data_fingerprint, fingerprint,
                                             phase_fingerprint_inputs)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A CSV and a copy of it elsewhere; a tiny pretrained tokenizer, a copy, and other weights."""
    root = tmp_path_factory.mktemp("fp")
    lines = sample_path().read_text().splitlines()[:2000]
    (root / "a").mkdir()
    (root / "a" / "prices.csv").write_text("\n".join(lines) + "\n")
    (root / "b").mkdir()
    shutil.copy(root / "a" / "prices.csv", root / "b" / "prices.csv")
    changed = lines[:]
    changed[5] = changed[5][:-1] + ("1" if changed[5][-1] != "1" else "2")  # one digit of one row
    (root / "changed.csv").write_text("\n".join(changed) + "\n")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        arch = OmegaConf.to_container(compose("config").tokenizer.arch)
    KronosTokenizer(**arch).save_pretrained(root / "tok_a")
    shutil.copytree(root / "tok_a", root / "tok_b")
    import torch
    torch.manual_seed(1)
    KronosTokenizer(**arch).save_pretrained(root / "tok_other")
    return root


@functools.lru_cache(maxsize=None)  # the unchanged baselines are composed once
def _fp(place: Path, overrides: tuple[str, ...], phase: str) -> str:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides=["data=csv", "data.symbol_column=symbol", *overrides])
    if OmegaConf.is_missing(cfg.data, "path") and not cfg.data.paths:
        cfg.data.path = str(place / "a" / "prices.csv")
    run = resolve(cfg)
    data = data_fingerprint([file_sha256(p) for p in resolve_paths(run.data)], dataclasses.asdict(run.data))
    upstream = {"tokenizer_fingerprint": "t"} if phase == "predictor" else None
    return fingerprint(phase_fingerprint_inputs(phase, getattr(run, phase), data=data, precision=run.precision,
                                                upstream=upstream))


# (what changes, overrides ({p} = the folder of this test's files), phase, must the fingerprint differ)
CASES = [
    ("relative path to the same CSV", ["data.path=a/prices.csv"], "tokenizer", False),
    ("the same CSV in another folder", ["data.path={p}/b/prices.csv"], "tokenizer", False),
    ("the same CSV as a one-item list", ["data.paths=[{p}/a/prices.csv]"], "tokenizer", False),
    ("one row of the CSV", ["data.path={p}/changed.csv"], "tokenizer", True),
    ("data.lookback_window", ["data.lookback_window=32"], "tokenizer", True),
    ("tokenizer.lr", ["tokenizer.lr=1e-3"], "tokenizer", True),
    ("tokenizer.arch without pretrained", ["tokenizer.arch.d_model=64"], "tokenizer", True),
    ("tokenizer.log_interval", ["tokenizer.log_interval=3"], "tokenizer", False),
    ("num_workers", ["num_workers=2"], "tokenizer", False),
    ("device", ["device=cpu"], "tokenizer", False),
    ("mlflow.tracking_uri", ["mlflow.tracking_uri=sqlite:///elsewhere.db"], "tokenizer", False),
    ("mlflow.experiment_name", ["mlflow.experiment_name=other"], "tokenizer", False),
    ("seed", ["seed=1"], "tokenizer", True),
    ("tokenizer.seed equal to the run's seed", ["tokenizer.seed=42"], "tokenizer", False),
    ("tokenizer.seed", ["tokenizer.seed=1"], "tokenizer", True),
    ("predictor.seed, for the tokenizer", ["predictor.seed=1"], "tokenizer", False),
    ("predictor.seed, for the predictor", ["predictor.seed=1"], "predictor", True),
    ("precision", ["precision=bf16"], "tokenizer", True),
    ("predictor.max_context (only warns)", ["predictor.max_context=1024"], "predictor", False),
    ("predictor.teacher_forcing", ["predictor.teacher_forcing=false"], "predictor", True),
    ("predictor.lr, for the tokenizer", ["predictor.lr=1e-3"], "tokenizer", False),
]
PRETRAINED_CASES = [  # against tokenizer.pretrained={p}/tok_a
    ("the same weights in another folder", ["tokenizer.pretrained={p}/tok_b"], False),
    ("tokenizer.arch when pretrained decides it", ["tokenizer.pretrained={p}/tok_a", "tokenizer.arch.d_model=64"], False),
    ("other pretrained weights", ["tokenizer.pretrained={p}/tok_other"], True),
    ("random init instead of pretrained", [], True),
]


@pytest.mark.parametrize("what, overrides, phase, differs", CASES, ids=[c[0] for c in CASES])
def test_fingerprint_changes_only_with_what_changes_the_weights(place, monkeypatch, what, overrides, phase, differs):
    monkeypatch.chdir(place)
    base = _fp(place, (), phase)
    other = _fp(place, tuple(o.format(p=place) for o in overrides), phase)
    assert (base != other) == differs, what


@pytest.mark.parametrize("what, overrides, differs", PRETRAINED_CASES, ids=[c[0] for c in PRETRAINED_CASES])
def test_pretrained_weights_are_identified_by_content(place, what, overrides, differs):
    base = _fp(place, (f"tokenizer.pretrained={place}/tok_a",), "tokenizer")
    other = _fp(place, tuple(o.format(p=place) for o in overrides), "tokenizer")
    assert (base != other) == differs, what


def test_code_digest_follows_the_training_source_not_its_location(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    assert code_digest(copy) == code_digest(PACKAGE_ROOT)
    loss = copy / "model" / "losses.py"
    text = loss.read_text()
    assert "recon_loss = recon_s1_loss + recon_full_loss" in text
    loss.write_text(text.replace("recon_loss = recon_s1_loss + recon_full_loss",
                                 "recon_loss = recon_s1_loss + 2 * recon_full_loss"))
    code_digest.cache_clear()
    changed_loss = code_digest(copy)
    assert changed_loss != code_digest(PACKAGE_ROOT)
    # Code that records or measures a checkpoint does not decide its weights: tracking, forecasting
    # (generation included) and the eval step may change without orphaning registered checkpoints.
    for measuring in ("tracking/plots.py", "forecasting/generation.py", "forecasting/predictor.py",
                      "evaluation/evaluate.py", "evaluation/metrics.py"):
        (copy / measuring).write_text("# changed\n")
        code_digest.cache_clear()
        assert code_digest(copy) == changed_loss, measuring


def test_pretrained_digest_is_hashed_once_and_follows_the_file(tmp_path):
    """A run asks for a pretrained checkpoint's identity several times: the weights are hashed
    once, and a rewritten weights file is hashed again."""
    from kronos_exp.tracking.fingerprint import _weights_digest, checkpoint_digest

    folder = tmp_path / "predictor"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "predictor", folder)
    _weights_digest.cache_clear()
    first = checkpoint_digest(str(folder))
    assert checkpoint_digest(str(folder)) == first
    assert _weights_digest.cache_info().misses == 1 and _weights_digest.cache_info().hits == 1
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    weights.write_bytes(bytes(data))
    assert checkpoint_digest(str(folder)) != first
