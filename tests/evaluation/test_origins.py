"""Forecast origins: horizons apart within a series by default, equal shares per series, at most eval.windows."""
import numpy as np

from kronos_exp.evaluation.origins import choose_origins


def _starts(*lengths: int, stride: int = 1) -> list[np.ndarray]:
    return [np.arange(0, n, stride) for n in lengths]


def test_origins_of_one_series_are_a_horizon_apart_and_as_many_as_fit():
    chosen = choose_origins(_starts(50), limit=100, horizon=8, overlap=False)
    assert chosen[:, 1].tolist() == [0, 8, 16, 24, 32, 40, 48]


def test_the_limit_is_an_upper_bound_and_spacing_survives_it():
    chosen = choose_origins(_starts(200), limit=5, horizon=8, overlap=False)
    assert len(chosen) == 5 and np.all(np.diff(chosen[:, 1]) >= 8)


def test_series_of_equal_length_get_the_same_origins():
    chosen = choose_origins(_starts(40, 40, 40), limit=9, horizon=4, overlap=False)
    starts = [chosen[chosen[:, 0] == k, 1].tolist() for k in range(3)]
    assert starts[0] == starts[1] == starts[2] and len(starts[0]) == 3


def test_strided_windows_keep_their_spacing_in_rows():
    chosen = choose_origins(_starts(100, stride=3), limit=100, horizon=8, overlap=False)
    assert chosen[:, 1].tolist()[:3] == [0, 9, 18]


def test_fewer_origins_than_series_take_one_from_evenly_chosen_series():
    chosen = choose_origins(_starts(20, 20, 20, 20), limit=2, horizon=4, overlap=False)
    assert chosen[:, 0].tolist() == [0, 2]


def test_a_series_too_short_for_a_window_gets_no_origin():
    chosen = choose_origins([np.arange(0), np.arange(30)], limit=4, horizon=8, overlap=False)
    assert set(chosen[:, 0].tolist()) == {1} and len(chosen) == 4


def test_overlapping_origins_only_when_asked():
    chosen = choose_origins(_starts(50), limit=10, horizon=8, overlap=True)
    assert len(chosen) == 10 and np.diff(chosen[:, 1]).min() < 8
