"""The data-frame facts in kronos_exp.data.frame agree with the rules they replace: the published
KronosPredictor's amount fill and float32 normalization, and the float64 windows on a device."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_exp.data import (
    FEATURES,
    PRICE_COLUMNS,
    DataConfig,
    DataError,
    DuplicateTimestampError,
    amount_from_volume,
    load_series,
    lookback_denormalize,
    lookback_normalize,
    volume_and_amount,
)


def _prices(dtype, n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({name: rng.uniform(1, 1e4, n) for name in PRICE_COLUMNS})
    df["volume"] = rng.integers(0, 10**7, n)
    return df.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_amount_rule_is_the_published_volume_times_mean_price_to_the_bit(dtype):
    df = _prices(dtype)
    published = df["volume"] * df[list(PRICE_COLUMNS)].mean(axis=1)
    ours = amount_from_volume(df["volume"], *(df[c] for c in PRICE_COLUMNS))
    np.testing.assert_array_equal(np.asarray(ours), published.to_numpy())
    arrays = {name: df[name].to_numpy() for name in df}
    np.testing.assert_array_equal(volume_and_amount(arrays, len(df))[1], published.to_numpy())


def test_volume_and_amount_fill_rules():
    df = _prices(np.float64, n=4)
    volume, amount = volume_and_amount(df.drop(columns="volume"), len(df))
    assert volume.tolist() == amount.tolist() == [0.0] * 4
    df["amount"] = [1.0, 2.0, 3.0, 4.0]
    assert volume_and_amount(df, len(df))[1].tolist() == [1.0, 2.0, 3.0, 4.0]  # given: kept


def test_float32_normalization_is_the_published_predictors_to_the_bit():
    values = _prices(np.float64)[list(PRICE_COLUMNS) + ["volume"]].assign(amount=1.5).to_numpy().astype(np.float32)
    mean, std = values.mean(axis=0), values.std(axis=0)
    published = np.clip((values - mean) / (std + 1e-5), -5.0, 5.0)
    x, m, s = lookback_normalize(values, len(values), 5.0, dtype=np.float32)
    assert x.dtype == m.dtype == s.dtype == np.float32
    np.testing.assert_array_equal(x, published)
    np.testing.assert_array_equal(m[0], mean)
    np.testing.assert_array_equal(lookback_denormalize(x, m[0], s[0]), x * (std + 1e-5) + mean)


def test_float64_statistics_differ_from_float32_ones():
    """dtype is no decoration: float64 statistics are what the training windows use."""
    rng = np.random.default_rng(1)
    w = (1e4 + rng.normal(0, 1, (64, len(FEATURES)))).astype(np.float32)
    x64, _, _ = lookback_normalize(w, 48, 5.0, dtype=np.float64)
    x32, _, _ = lookback_normalize(w, 48, 5.0, dtype=np.float32)
    assert not np.array_equal(x64, x32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_windows_normalize_as_numpy_ones(dtype):
    rng = np.random.default_rng(2)
    w = (100 * np.exp(rng.normal(0, 0.02, (8, 40, len(FEATURES))))).astype(np.float32)
    x, mean, std = lookback_normalize(w, 32, 1.5, dtype=dtype)
    tx, tmean, tstd = lookback_normalize(torch.from_numpy(w), 32, 1.5, dtype=dtype)
    assert tx.dtype == torch.float32 and tmean.dtype == {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    tol = 1e-6 if dtype == np.float64 else 1e-4  # numpy and torch sum float32 in different orders
    torch.testing.assert_close(tx, torch.from_numpy(x), rtol=0, atol=tol)
    torch.testing.assert_close(tmean.float(), torch.from_numpy(mean), rtol=tol, atol=0)
    torch.testing.assert_close(tstd.float(), torch.from_numpy(std), rtol=tol, atol=0)


def test_a_duplicate_timestamp_is_a_typed_error(write_csv, frame):
    df = frame(20)
    df.loc[5, "timestamps"] = df.loc[4, "timestamps"]
    with pytest.raises(DuplicateTimestampError, match="duplicate timestamp"):
        load_series(DataConfig(path=write_csv("dup.csv", df)))


def test_only_a_duplicate_timestamp_gets_the_symbol_column_hint(write_csv, frame):
    """The hint used to be chosen by the error's text: a path that reads "duplicate timestamp"
    put it on every error of that file."""
    df = frame(20).assign(note="x")
    df.loc[3, "close"] = np.nan
    path = write_csv("duplicate timestamp/a.csv", df)
    with pytest.raises(DataError) as caught:
        load_series(DataConfig(path=path, nan_policy="error"))
    assert "missing value" in str(caught.value) and "symbol_column" not in str(caught.value)
    assert not isinstance(caught.value, DuplicateTimestampError)
