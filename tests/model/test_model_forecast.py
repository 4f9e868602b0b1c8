"""KronosPredictor (DataFrame in, DataFrame out) and the sampling helpers of forecast.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_exp.model import KronosPredictor
from kronos_exp.model.forecast import filter_logits, sample_next

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


# ---------------------------------------------------------------- sampling helpers


def test_top_k_one_is_greedy():
    logits = torch.randn(64, 37, generator=torch.Generator().manual_seed(0))
    filtered = filter_logits(logits, top_k=1)
    assert torch.equal(torch.isfinite(filtered).sum(-1), torch.ones(64, dtype=torch.long))
    assert torch.equal(filtered.argmax(-1), logits.argmax(-1))
    assert torch.equal(filtered.gather(-1, logits.argmax(-1, keepdim=True)),
                       logits.gather(-1, logits.argmax(-1, keepdim=True)))
    for seed in range(3):
        torch.manual_seed(seed)
        picks = sample_next(logits, temperature=1.7, top_k=1, top_p=0.5)
        assert picks.shape == (64, 1) and torch.equal(picks[:, 0], logits.argmax(-1))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]])
    filtered = filter_logits(logits, top_k=3)
    assert torch.isfinite(filtered).tolist() == [[False, True, False, True, True]]
    assert torch.equal(filtered[torch.isfinite(filtered)], torch.tensor([2.0, 1.5, 0.9]))
    assert torch.equal(filter_logits(logits, top_k=50), logits)  # k beyond the vocabulary keeps all
    assert torch.equal(filter_logits(logits), logits)  # the defaults filter nothing
    assert torch.equal(logits, torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]]))  # input left alone


def test_top_k_takes_precedence_over_top_p_as_in_the_published_sampler():
    logits = probs_logits(0.125, 0.5, 0.125, 0.25)
    # top_p=0.3 alone keeps only the top token; with top_k=2 the published code applies top_k alone.
    assert int(torch.isfinite(filter_logits(logits, top_p=0.3)).sum()) == 1
    assert int(torch.isfinite(filter_logits(logits, top_k=2, top_p=0.3)).sum()) == 2


def probs_logits(*probs):
    return torch.tensor([probs], dtype=torch.float64).log()


@pytest.mark.parametrize("top_p, kept", [
    (0.3, [True, False, False, False]),   # the top token alone already has 0.5 >= 0.3
    (0.5, [True, False, False, False]),   # exactly reached by one token
    (0.6, [True, True, False, False]),
    (0.75, [True, True, False, False]),   # exactly reached by two tokens
    (0.8, [True, True, True, False]),
    (0.99, [True, True, True, True]),
])
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p, kept):
    # probabilities 0.5, 0.25, 0.125, 0.125 (exact in binary), given out of order
    logits = probs_logits(0.125, 0.5, 0.125, 0.25)
    order = [1, 3, 0, 2]  # positions by decreasing probability; the two 0.125 tie
    filtered = filter_logits(logits, top_p=top_p)
    finite = torch.isfinite(filtered)[0]
    assert int(finite.sum()) == sum(kept)
    for rank, keep in enumerate(kept[:2]):  # the untied ranks are determined exactly
        assert bool(finite[order[rank]]) == keep
    assert torch.equal(filtered[torch.isfinite(filtered)], logits[torch.isfinite(filtered)])


@pytest.mark.parametrize("top_p, n_kept", [(0.2, 1), (0.25, 1), (0.3, 2), (0.5, 2), (0.75, 3), (0.9, 4)])
def test_top_p_at_exact_mass_boundaries(top_p, n_kept):
    uniform = torch.zeros(3, 4)  # probabilities of exactly 0.25; cumulative 0.25, 0.5, 0.75, 1
    assert torch.equal(torch.isfinite(filter_logits(uniform, top_p=top_p)).sum(-1), torch.full((3,), n_kept))


@pytest.mark.parametrize("top_p", [0.0, 1e-9, 0.2])
def test_top_p_always_keeps_at_least_one_token(top_p):
    logits = torch.randn(16, 9, generator=torch.Generator().manual_seed(1))
    filtered = filter_logits(logits, top_p=top_p)
    assert torch.equal(torch.isfinite(filtered).sum(-1), torch.ones(16, dtype=torch.long))
    assert torch.equal(filtered.argmax(-1), logits.argmax(-1))
    torch.manual_seed(0)
    assert torch.equal(sample_next(logits, top_p=top_p)[:, 0], logits.argmax(-1))


def test_top_p_on_a_batch_filters_each_row():
    logits = torch.cat([probs_logits(0.5, 0.25, 0.125, 0.125), probs_logits(0.125, 0.125, 0.25, 0.5),
                        probs_logits(0.7, 0.1, 0.1, 0.1)])
    kept = torch.isfinite(filter_logits(logits, top_p=0.6))
    assert kept.tolist() == [[True, True, False, False], [False, False, True, True], [True, False, False, False]]


def test_sample_next_follows_the_filtered_distribution():
    torch.manual_seed(0)
    logits = probs_logits(0.5, 0.25, 0.125, 0.125).float().repeat(4000, 1)
    picks = sample_next(logits, top_p=0.75)[:, 0]
    assert set(picks.tolist()) == {0, 1}
    share = (picks == 0).float().mean().item()
    assert abs(share - 2 / 3) < 0.04  # renormalised over the kept mass 0.75
    picks = sample_next(logits, temperature=1.0)[:, 0]
    counts = torch.bincount(picks, minlength=4).float() / len(picks)
    assert torch.allclose(counts, torch.tensor([0.5, 0.25, 0.125, 0.125]), atol=0.03)


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
