"""Forecast origins: dates shared by the series of a panel, a horizon apart in each series' own rows
by default, at most eval.windows of them (eval.windows // series dates on a panel)."""
import numpy as np

from kronos_exp.evaluation.origins import choose_origins

DAY0 = np.datetime64("2024-01-01T00:00", "ns")


def _series(n: int, missing: range = range(0), first: int = 0) -> np.ndarray:
    """The origin date of each row of one series (a one-row lookback): days first..n-1 but ``missing``."""
    return DAY0 + np.array([d for d in range(first, n) if d not in missing]).astype("timedelta64[D]")


def _choose(*series, limit=100, horizon=8, overlap=False):
    return choose_origins(list(series), limit, horizon, overlap)


def test_origins_of_one_series_are_a_horizon_apart_and_as_many_as_fit():
    chosen, lag = _choose(_series(50))
    assert chosen[:, 1].tolist() == [0, 8, 16, 24, 32, 40, 48] and lag == 0


def test_the_limit_is_an_upper_bound_and_spacing_survives_it():
    chosen, _ = _choose(_series(200), limit=5)
    assert len(chosen) == 5 and np.all(np.diff(chosen[:, 1]) >= 8)


def test_a_panel_forecasts_every_series_at_the_same_dates():
    chosen, _ = _choose(_series(40), _series(40), _series(40), limit=9, horizon=4)
    starts = [chosen[chosen[:, 0] == k, 1].tolist() for k in range(3)]
    assert starts[0] == starts[1] == starts[2] and len(starts[0]) == 3
    assert chosen[:, 0].tolist() == [0, 1, 2] * 3  # date, then series order


def test_fewer_origins_than_series_still_forecast_one_whole_cross_section():
    chosen, _ = _choose(*[_series(20)] * 4, limit=2, horizon=4)
    assert chosen[:, 0].tolist() == [0, 1, 2, 3] and len(set(chosen[:, 1].tolist())) == 1


def test_a_series_too_short_for_a_window_gets_no_origin():
    empty = np.array([], dtype="datetime64[ns]")
    chosen, _ = _choose(empty, _series(30), limit=4)
    assert set(chosen[:, 0].tolist()) == {1} and len(chosen) == 4


def test_a_series_missing_five_bars_meets_the_others_on_every_date_when_those_are_enough():
    full, gappy = _series(100), _series(100, missing=range(40, 45))
    chosen, lag = _choose(full, gappy, limit=24)
    dates = {k: [series[s] for s in chosen[chosen[:, 0] == k, 1]] for k, series in enumerate((full, gappy))}
    assert dates[0] == dates[1] and DAY0 + np.timedelta64(40, "D") not in dates[0]
    assert len(dates[0]) == 12 and lag == 0  # 0, 8, ..., 32, then 45, 53, ..., 93
    for k in (0, 1):
        assert np.diff(chosen[chosen[:, 0] == k, 1]).min() >= 8


def test_wanting_more_dates_than_all_share_takes_any_series_dates():
    full, gappy = _series(100), _series(100, missing=range(40, 45))
    chosen, lag = _choose(full, gappy, limit=100)
    dates = {k: [series[s] for s in chosen[chosen[:, 0] == k, 1]] for k, series in enumerate((full, gappy))}
    assert dates[0] == [DAY0 + np.timedelta64(d, "D") for d in range(0, 100, 8)]
    assert set(dates[1]) == set(dates[0]) - {DAY0 + np.timedelta64(40, "D")}  # it rejoins at day 48
    assert np.diff(chosen[chosen[:, 0] == 1, 1]).min() >= 8 and lag == 0


def test_series_on_different_hours_share_no_date_and_are_forecast_on_their_own():
    chosen, _ = _choose(_series(40), _series(40) + np.timedelta64(1, "h"), limit=8, horizon=4)
    assert len(chosen) == 4 and chosen[:, 0].tolist() == [0, 1, 0, 1]


def test_a_late_series_is_in_every_cross_section_when_its_dates_are_enough():
    late = _series(100, first=60)  # shares only days 60-99 with the others
    chosen, _ = _choose(_series(100), _series(100), late, limit=12, horizon=8)
    assert chosen[:, 0].tolist() == [0, 1, 2] * 4 and chosen[0, 1] == 60  # 4 dates x 3 series, from day 60
    chosen, _ = _choose(_series(100), _series(100), late, limit=30, horizon=8)
    assert chosen[:2, 0].tolist() == [0, 1] and chosen[0, 1] == 0  # 10 dates wanted: before day 60 too


def test_overlapping_origins_only_when_asked_with_the_steps_they_share():
    chosen, lag = _choose(_series(50), limit=10, overlap=True)
    gap = np.diff(chosen[:, 1]).min()
    assert len(chosen) == 10 and gap < 8 and lag == int(np.ceil(8 / gap)) - 1
