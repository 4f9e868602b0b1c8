import numpy as np
import pandas as pd

from kronos_exp.data import DataConfig, build_datasets, generate_sample, load_series, sample_path
from kronos_exp.data.sample import main as sample_main


def test_generator_is_deterministic_and_seeded():
    a = generate_sample(seed=0, days=5)
    b = generate_sample(seed=0, days=5)
    pd.testing.assert_frame_equal(a, b)
    assert not generate_sample(seed=1, days=5)["close"].equals(a["close"])
    assert list(a.columns) == ["timestamps", "symbol", "open", "high", "low", "close", "volume", "amount"]
    assert len(a) == 3 * 5 * 78


def test_sessions_gaps_and_consistent_bars():
    df = generate_sample(seed=0, days=10)
    g = df[df.symbol == "ACME"]
    ts = pd.DatetimeIndex(g.timestamps)
    assert ts.min() == pd.Timestamp("2024-01-02 09:30") and ts.max() == pd.Timestamp("2024-01-15 15:55")
    assert (ts.day_of_week < 5).all()
    assert ((ts.hour * 60 + ts.minute >= 9 * 60 + 30) & (ts.hour * 60 + ts.minute <= 15 * 60 + 55)).all()
    steps = pd.Series(np.diff(ts.values)).value_counts()
    assert steps.index.tolist() == [pd.Timedelta("5min"), pd.Timedelta("17h35min"), pd.Timedelta("2 days 17h35min")]
    assert (df.high >= df[["open", "close"]].max(axis=1)).all()
    assert (df.low <= df[["open", "close"]].min(axis=1)).all()
    assert (df.low > 0).all() and (df.volume > 0).all()


def test_stylised_facts():
    df = generate_sample(seed=0)
    for _, g in df.groupby("symbol"):
        r = np.diff(np.log(g.close.to_numpy()))
        a = np.abs(r)
        assert np.corrcoef(a[1:], a[:-1])[0, 1] > 0.1  # volatility clustering
        kurtosis = ((r - r.mean()) ** 4).mean() / r.var() ** 2
        assert kurtosis > 5  # fat tails
        assert np.corrcoef(a, g.volume.to_numpy()[1:])[0, 1] > 0.3  # volume follows |return|
        typical = (g.high + g.low + g.close) / 3
        ratio = g.amount / (g.volume * typical)
        assert ratio.between(0.99, 1.01).all()  # amount ~ volume * price


def test_bundled_file_is_small_and_matches_the_generator():
    path = sample_path()
    assert path.stat().st_size < 1.5e6
    shipped = pd.read_csv(path, parse_dates=["timestamps"])
    fresh = generate_sample()
    assert len(shipped) == len(fresh) and list(shipped.columns) == list(fresh.columns)
    assert (shipped.symbol == fresh.symbol).all()
    assert (pd.DatetimeIndex(shipped.timestamps) == pd.DatetimeIndex(fresh.timestamps)).all()
    for col in ("open", "high", "low", "close", "volume", "amount"):
        np.testing.assert_allclose(shipped[col], fresh[col], rtol=1e-6, err_msg=f"regenerate: python -m kronos_exp.data.sample ({col})")


def test_main_writes_a_file(tmp_path, capsys):
    out = tmp_path / "s.csv"
    sample_main(["--out", str(out), "--days", "2", "--symbols", "X", "Y"])
    series = load_series(DataConfig(path=str(out), symbol_column="symbol"))
    assert [(s.name, len(s)) for s in series] == [("X", 156), ("Y", 156)]
    assert "wrote" in capsys.readouterr().out


def test_sample_config_gives_a_quick_run():
    splits = build_datasets(
        DataConfig(symbol_column="symbol", stride=2, max_train_windows=2048, max_eval_windows=512)
    )
    assert [s.name for s in splits.series] == ["ACME", "GLOBEX", "INITECH"]
    assert splits.summary["rows"] == {"train": 11232, "val": 1404, "test": 1404}
    assert splits.summary["windows"] == {"train": 2048, "val": 512, "test": 512}
    x, stamp = splits.train[0]
    assert x.shape == (80, 6) and stamp.shape == (80, 5)
