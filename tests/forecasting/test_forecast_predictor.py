"""kronos_exp.forecasting.KronosPredictor (DataFrame in, DataFrame out) on the parity fixture's models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_exp.forecasting import KronosPredictor

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]
GREEDY = dict(T=1.0, top_k=1, top_p=1.0, sample_count=1, verbose=False)
PRED_LEN = 4


@pytest.fixture
def predictor(tok, model, meta):
    return KronosPredictor(model, tok, device="cpu", max_context=meta["max_context"], clip=5)


def assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == list(b.columns) and a.index.equals(b.index)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


# ---------------------------------------------------------------- predict


def test_predict_returns_the_six_columns_indexed_by_y_timestamp(predictor, window):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    out = predictor.predict(df, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == COLUMNS
    assert isinstance(out.index, pd.DatetimeIndex) and list(out.index) == list(y_ts)
    assert out.shape == (PRED_LEN, 6) and np.isfinite(out.to_numpy()).all()
    # forecasts live on the scale of the history (normalisation is undone)
    assert ((out["close"] > df["close"].min() - 5 * df["close"].std())
            & (out["close"] < df["close"].max() + 5 * df["close"].std())).all()
    # the column order of the input does not matter, nor does the timestamps' container
    shuffled = df[["volume", "close", "amount", "low", "open", "high"]]
    assert_frames_equal(predictor.predict(shuffled, pd.DatetimeIndex(x_ts), list(y_ts), pred_len=PRED_LEN, **GREEDY),
                        out)


def test_predict_does_not_modify_its_input(predictor, window):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    prices = df[["open", "high", "low", "close"]].copy()
    predictor.predict(prices, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    assert list(prices.columns) == ["open", "high", "low", "close"]


def test_missing_volume_fills_volume_and_amount_with_zero(predictor, window):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    without = predictor.predict(df[["open", "high", "low", "close"]], x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    zeros = df.assign(volume=0.0, amount=0.0)
    assert_frames_equal(without, predictor.predict(zeros, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY))
    # a zero history forecasts (numerically) zero volume and amount
    assert np.abs(without[["volume", "amount"]].to_numpy()).max() < 1e-3


def test_missing_amount_is_volume_times_mean_price(predictor, window):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    without = predictor.predict(df.drop(columns=["amount"]), x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    explicit = df.assign(amount=df["volume"] * df[["open", "high", "low", "close"]].mean(axis=1))
    assert_frames_equal(without, predictor.predict(explicit, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY))
    # amount matters: the recorded amount and a zero amount forecast differently
    for other in (df, df.assign(amount=0.0)):
        assert not np.array_equal(predictor.predict(other, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY).to_numpy(),
                                  without.to_numpy())


@pytest.mark.parametrize("column", ["close", "volume", "amount"])
def test_nan_is_an_error_naming_the_column(predictor, window, column):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    df.loc[3, column] = np.nan
    with pytest.raises(ValueError) as err:
        predictor.predict(df, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    msg = str(err.value)
    assert column in msg and "NaN" in msg
    others = [c for c in COLUMNS if c != column]
    assert not any(f"{c}@" in msg for c in others)


def test_history_length_mismatch_names_both_lengths(predictor, window):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    with pytest.raises(ValueError) as err:
        predictor.predict(df, x_ts.iloc[:17], y_ts, pred_len=PRED_LEN, **GREEDY)
    assert "17" in str(err.value) and "20" in str(err.value)


def test_forecast_length_mismatch_names_both_numbers(predictor, window):
    df, x_ts, y_ts = window(0, 20, 7)
    with pytest.raises(ValueError) as err:
        predictor.predict(df, x_ts, y_ts, pred_len=5, **GREEDY)
    assert "7" in str(err.value) and "5" in str(err.value)


@pytest.mark.parametrize("column", ["open", "low"])
def test_missing_price_column_is_named(predictor, window, column):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    with pytest.raises(ValueError) as err:
        predictor.predict(df.drop(columns=[column]), x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    assert f"'{column}'" in str(err.value)


def test_predict_batch_equals_predict_under_greedy_decoding(predictor, window):
    # two series of 20 steps (batched together), one of 40 (longer than max_context 32), one of 30
    windows = [window(0, 20, PRED_LEN), window(7, 20, PRED_LEN), window(0, 40, PRED_LEN), window(3, 30, PRED_LEN)]
    singles = [predictor.predict(df, x, y, pred_len=PRED_LEN, **GREEDY) for df, x, y in windows]
    batch = predictor.predict_batch([w[0] for w in windows], [w[1] for w in windows], [w[2] for w in windows],
                                    pred_len=PRED_LEN, **GREEDY)
    assert len(batch) == len(windows)
    for single, batched in zip(singles, batch):
        assert_frames_equal(batched, single)
    # and the series are not all the same forecast
    assert not np.array_equal(batch[0].to_numpy(), batch[1].to_numpy())


def test_predict_batch_checks_each_series(predictor, window):
    good, bad = window(0, 20, PRED_LEN), window(5, 20, PRED_LEN)
    bad_df = bad[0].drop(columns=["high"])
    with pytest.raises(ValueError) as err:
        predictor.predict_batch([good[0], bad_df], [good[1], bad[1]], [good[2], bad[2]], pred_len=PRED_LEN, **GREEDY)
    assert "series 1" in str(err.value) and "'high'" in str(err.value)
    with pytest.raises(ValueError) as err:
        predictor.predict_batch([good[0], bad[0]], [good[1]], [good[2], bad[2]], pred_len=PRED_LEN, **GREEDY)
    assert "2, 1, 2" in str(err.value)


def test_sample_count_averages_samples(predictor, window):
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    greedy = predictor.predict(df, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    # identical greedy samples average to the single greedy forecast
    three = predictor.predict(df, x_ts, y_ts, pred_len=PRED_LEN, T=1.0, top_k=1, top_p=1.0, sample_count=3,
                              verbose=False)
    np.testing.assert_allclose(three.to_numpy(), greedy.to_numpy(), rtol=1e-6)
    torch.manual_seed(0)
    sampled = predictor.predict(df, x_ts, y_ts, pred_len=PRED_LEN, T=1.0, top_k=0, top_p=0.9, sample_count=5,
                                verbose=False)
    assert sampled.shape == (PRED_LEN, 6) and list(sampled.columns) == COLUMNS
    assert list(sampled.index) == list(y_ts) and np.isfinite(sampled.to_numpy()).all()
    torch.manual_seed(0)
    again = predictor.predict(df, x_ts, y_ts, pred_len=PRED_LEN, T=1.0, top_k=0, top_p=0.9, sample_count=5,
                              verbose=False)
    assert_frames_equal(again, sampled)  # seeded sampling is reproducible
    batch = predictor.predict_batch([df, df], [x_ts, x_ts], [y_ts, y_ts], pred_len=PRED_LEN, T=1.0, top_k=0,
                                    top_p=0.9, sample_count=4, verbose=False)
    assert [b.shape for b in batch] == [(PRED_LEN, 6)] * 2


def test_generation_slides_a_window_of_max_context_tokens(tok, model, window):
    """Each step the predictor sees the newest max_context tokens with their own timestamps."""
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    calls = []
    hidden_states = model.hidden_states

    def spy(s1_ids, s2_ids, stamp=None, padding_mask=None):
        calls.append((s1_ids.clone(), s2_ids.clone(), stamp.clone()))
        return hidden_states(s1_ids, s2_ids, stamp, padding_mask)

    model.hidden_states = spy
    out = KronosPredictor(model, tok, device="cpu", max_context=8, clip=5).predict(
        df, x_ts, y_ts, pred_len=PRED_LEN, **GREEDY)
    assert len(calls) == PRED_LEN
    all_ts = pd.concat([x_ts, y_ts], ignore_index=True)
    for i, (s1, s2, stamp) in enumerate(calls):
        assert s1.shape == s2.shape == (1, 8) and stamp.shape == (1, 8, 5)
        # the window ends at the newest known step (20 + i) ...
        window_ts = all_ts.iloc[20 + i - 8:20 + i]
        assert stamp[0, :, 0].tolist() == window_ts.dt.minute.tolist()
        assert stamp[0, :, 1].tolist() == window_ts.dt.hour.tolist()
        if i:  # ... and moves by one step, appending the token generated last
            assert torch.equal(s1[:, :-1], calls[i - 1][0][:, 1:]) and torch.equal(s2[:, :-1], calls[i - 1][1][:, 1:])
    # the history tokens are those of the whole history, encoded causally
    x = torch.from_numpy(((df[COLUMNS].to_numpy(np.float32) - df[COLUMNS].to_numpy(np.float32).mean(0))
                          / (df[COLUMNS].to_numpy(np.float32).std(0) + 1e-5)).clip(-5, 5))[None]
    with torch.no_grad():
        s1_hist, s2_hist = tok.encode(x, half=True)
    assert torch.equal(calls[0][0], s1_hist[:, -8:]) and torch.equal(calls[0][1], s2_hist[:, -8:])
    assert out.shape == (PRED_LEN, 6)


def test_zone_aware_timestamps_forecast_like_their_wall_clock(predictor, window):
    """A DataFrame with New York times gives the published code's calendar features: those of
    the times as written, also when the history crosses a DST change."""
    df, x_ts, y_ts = window(0, 20, PRED_LEN)
    # 5-minute bars across the 2024-03-10 spring-forward: the wall clock jumps from 01:55 to 03:00.
    aware = pd.date_range("2024-03-10 01:00", periods=len(x_ts) + PRED_LEN, freq="5min", tz="America/New_York")
    wall = aware.tz_localize(None)

    def forecast(stamps):
        return predictor.predict(df, pd.Series(stamps[:len(x_ts)]), pd.Series(stamps[len(x_ts):]),
                                 pred_len=PRED_LEN, **GREEDY).to_numpy()

    np.testing.assert_array_equal(forecast(aware), forecast(wall))
    # The check can fail: the same instants read in UTC give other features and another forecast.
    assert not np.array_equal(forecast(aware.tz_convert("UTC")), forecast(wall))
