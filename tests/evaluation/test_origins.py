"""Forecast origins: horizons apart within a series by default, equal shares per series, at most eval.windows."""
import numpy as np

from kronos_exp.evaluation.origins import choose_origins


def _index(*lengths: int) -> np.ndarray:
    return np.array([(k, s) for k, n in enumerate(lengths) for s in range(n)], dtype=np.int64)


def test_origins_of_one_series_are_a_horizon_apart_and_as_many_as_fit():
    index = _index(50)
    chosen = choose_origins(index, limit=100, horizon=8, overlap=False)
    assert index[chosen, 1].tolist() == [0, 8, 16, 24, 32, 40, 48]


def test_the_limit_is_an_upper_bound_and_spacing_survives_it():
    index = _index(200)
    chosen = choose_origins(index, limit=5, horizon=8, overlap=False)
    assert len(chosen) == 5 and np.all(np.diff(index[chosen, 1]) >= 8)


def test_series_of_equal_length_get_the_same_origins():
    index = _index(40, 40, 40)
    chosen = choose_origins(index, limit=9, horizon=4, overlap=False)
    starts = [index[chosen][index[chosen, 0] == k, 1].tolist() for k in range(3)]
    assert starts[0] == starts[1] == starts[2] and len(starts[0]) == 3


def test_subsampled_windows_keep_their_spacing_in_rows():
    index = _index(100)[::3]  # data.max_eval_windows left every third window
    chosen = choose_origins(index, limit=100, horizon=8, overlap=False)
    assert np.all(np.diff(index[chosen, 1]) >= 8)


def test_fewer_origins_than_series_take_one_from_evenly_chosen_series():
    index = _index(20, 20, 20, 20)
    chosen = choose_origins(index, limit=2, horizon=4, overlap=False)
    assert index[chosen, 0].tolist() == [0, 2]


def test_overlapping_origins_only_when_asked():
    index = _index(50)
    chosen = choose_origins(index, limit=10, horizon=8, overlap=True)
    assert len(chosen) == 10 and np.diff(index[chosen, 1]).min() < 8
