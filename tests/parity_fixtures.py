"""Fixtures for the model and forecasting tests (a pytest plugin: tests/conftest.py names it): the
parity fixture (tests/fixtures/parity) and tiny random models."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from kronos_exp.model import Kronos, KronosTokenizer

PARITY_DIR = Path(__file__).resolve().parent / "fixtures" / "parity"

# Small architectures: fast on 2 CPU cores, every dropout 0 so train mode is deterministic.
TINY_TOKENIZER = dict(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2,
                      ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4,
                      beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)
TINY_PREDICTOR = dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=16, n_heads=2, ff_dim=32, ffn_dropout_p=0.0,
                      attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    assert (PARITY_DIR / "cases.pt").is_file(), f"parity fixture missing at {PARITY_DIR}"
    return PARITY_DIR


@pytest.fixture(scope="session")
def cases(parity_dir):
    return torch.load(parity_dir / "cases.pt", weights_only=True)


@pytest.fixture(scope="session")
def meta(parity_dir):
    return json.loads((parity_dir / "meta.json").read_text())


@pytest.fixture
def tok(parity_dir) -> KronosTokenizer:
    """The fixture tokenizer, freshly loaded (tests may switch its mode)."""
    return KronosTokenizer.from_pretrained(parity_dir / "tokenizer")


@pytest.fixture
def model(parity_dir) -> Kronos:
    """The fixture predictor, freshly loaded (tests may switch its mode)."""
    return Kronos.from_pretrained(parity_dir / "predictor")


@pytest.fixture
def make_tokenizer():
    """make_tokenizer(seed=0, **overrides) -> a tiny random KronosTokenizer."""
    def make(seed: int = 0, **overrides) -> KronosTokenizer:
        torch.manual_seed(seed)
        return KronosTokenizer(**{**TINY_TOKENIZER, **overrides})
    return make


@pytest.fixture
def make_predictor():
    """make_predictor(seed=0, **overrides) -> a tiny random Kronos."""
    def make(seed: int = 0, **overrides) -> Kronos:
        torch.manual_seed(seed)
        return Kronos(**{**TINY_PREDICTOR, **overrides})
    return make


@pytest.fixture
def random_stamp():
    """random_stamp(batch, time, seed) -> a valid calendar stamp [B, T, 5] (minute, hour, weekday, day, month)."""
    def make(batch: int, time: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        highs = [60, 24, 7, 32, 13]
        return torch.stack([torch.randint(0, h, (batch, time), generator=g) for h in highs], dim=-1).float()
    return make


@pytest.fixture
def forecast_series(cases):
    """The longer forecast series of the parity fixture: (DataFrame of 6 columns, timestamps Series)."""
    case = max(cases["forecasts"], key=lambda f: f["context"])
    df = pd.DataFrame(case["values"].numpy().copy(), columns=list(case["columns"]))
    return df, pd.Series(pd.to_datetime(case["timestamps"]))


@pytest.fixture
def window(forecast_series):
    """window(start, context, pred_len) -> (df, x_timestamp, y_timestamp) cut from the fixture series."""
    df, ts = forecast_series

    def cut(start: int, context: int, pred_len: int):
        assert start + context + pred_len <= len(df)
        return (df.iloc[start:start + context].reset_index(drop=True),
                ts.iloc[start:start + context].reset_index(drop=True),
                ts.iloc[start + context:start + context + pred_len].reset_index(drop=True))
    return cut
