"""The bundled sample: a deterministic, realistic multi-symbol 5-minute OHLCV generator.

The shipped file (`sample_path()`, kronos_exp/data/bundled/sample_5min.csv) lets the default run
work without a download. Regenerate it with

    python -m kronos_exp.data.sample            # writes the bundled file
    python -m kronos_exp.data.sample --out x.csv --days 20 --seed 1

What makes it look like market data:
  * sessions 09:30-16:00 on weekdays (78 five-minute bars, timestamp = bar start), so there are
    overnight and weekend gaps, with a price gap at each session open;
  * GARCH(1,1) volatility clustering with Student-t (fat-tailed) shocks, and an intraday U-shape
    (busier open and close);
  * volume follows the same U-shape and rises with |return|; amount = volume * typical price
    (high + low + close) / 3, up to a small noise;
  * consistent bars: high >= max(open, close), low <= min(open, close), prices in cents.
The symbols are made up.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

SAMPLE_FILE = "sample_5min.csv"
DEFAULT_SYMBOLS = ("ACME", "GLOBEX", "INITECH")
BARS_PER_SESSION = 78  # 09:30 .. 15:55 bar starts


def sample_path() -> Path:
    """Path of the bundled sample CSV (columns timestamps, symbol, open, high, low, close, volume, amount)."""
    return Path(__file__).resolve().parent / "bundled" / SAMPLE_FILE


def _session_times(start: str, days: int) -> np.ndarray:
    dates = pd.bdate_range(start=start, periods=days)  # weekdays only
    offsets = pd.to_timedelta(9 * 60 + 30 + 5 * np.arange(BARS_PER_SESSION), unit="min")
    stamps = dates.values[:, None] + offsets.values[None, :]  # [days, bars]
    return stamps.reshape(-1).astype("datetime64[ns]")


def _one_symbol(rng: np.random.Generator, days: int) -> dict[str, np.ndarray]:
    n = days * BARS_PER_SESSION
    bar = np.tile(np.arange(BARS_PER_SESSION), days)
    u = (bar - (BARS_PER_SESSION - 1) / 2) / ((BARS_PER_SESSION - 1) / 2)  # -1 at open .. 1 at close
    vol_shape = 0.75 + 0.75 * u**2  # intraday U-shape of volatility
    vol_shape /= vol_shape.mean()

    annual_vol = rng.uniform(0.2, 0.45)
    sigma_bar = annual_vol / np.sqrt(252 * BARS_PER_SESSION)
    alpha, beta, dof = 0.08, 0.90, 5.0
    omega = sigma_bar**2 * (1 - alpha - beta)
    shocks = rng.standard_t(dof, size=n) / np.sqrt(dof / (dof - 2))  # unit variance, fat tails
    eps_list = []
    var = sigma_bar**2
    for z in shocks.tolist():  # GARCH(1,1): each bar's variance remembers the last shock
        e = var**0.5 * z
        eps_list.append(e)
        var = omega + alpha * e * e + beta * var
    eps = np.asarray(eps_list)
    ret = eps * vol_shape + rng.normal(0.0, 0.02 * sigma_bar, n)  # open -> close of each bar

    gap = np.zeros(n)  # open of a bar vs previous close: overnight gaps at the session open
    gap[bar == 0] = rng.standard_t(dof, size=days) * 3 * sigma_bar
    gap[0] = 0.0
    gap[bar != 0] = rng.normal(0.0, 0.1 * sigma_bar, size=int((bar != 0).sum()))

    log_close = np.log(rng.uniform(20, 250)) + np.cumsum(gap + ret)
    close = np.exp(log_close)
    open_ = np.exp(log_close - ret)
    spread = np.sqrt(np.maximum(eps**2, sigma_bar**2 / 4)) * vol_shape
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.6, n)) * spread)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.6, n)) * spread)

    open_, high, low, close = (np.round(a, 2) for a in (open_, high, low, close))
    high = np.maximum.reduce([high, open_, close])
    low = np.minimum.reduce([low, open_, close])

    base = rng.uniform(2e4, 1.5e5)
    volume_shape = 0.6 + 1.4 * u**4 + 0.6 * (bar == 0) + 0.4 * (bar == BARS_PER_SESSION - 1)
    surprise = np.abs(ret + gap) / (sigma_bar * vol_shape)  # |return| in units of normal volatility
    volume = base * volume_shape * (1 + 0.6 * np.minimum(surprise, 15)) * np.exp(rng.normal(0, 0.3, n))
    volume = np.maximum(np.round(volume / 100) * 100, 100)  # round lots
    typical = (high + low + close) / 3
    amount = np.round(volume * typical * (1 + rng.normal(0, 0.0015, n)), 2)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "amount": amount}


def generate_sample(
    seed: int = 0,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    days: int = 60,
    start: str = "2024-01-02",
) -> pd.DataFrame:
    """Deterministic 5-minute bars for `symbols` over `days` weekdays from `start`.

    Columns: timestamps, symbol, open, high, low, close, volume, amount; rows grouped by symbol,
    in time order within each symbol. The same arguments always give the same frame.
    """
    stamps = _session_times(start, days)
    frames = []
    for i, symbol in enumerate(symbols):
        rng = np.random.default_rng([seed, i])
        cols = _one_symbol(rng, days)
        frame = pd.DataFrame({"timestamps": stamps, "symbol": symbol, **cols})
        frame["volume"] = frame["volume"].astype(np.int64)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_sample(path: Optional[Path] = None, **kwargs) -> Path:
    """Generate the sample (kwargs as for `generate_sample`) and write it as CSV; returns the path."""
    path = Path(path) if path is not None else sample_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_sample(**kwargs).to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kronos_exp.data.sample", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output CSV (default: the bundled file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--symbols", nargs="+", default=list(DEFAULT_SYMBOLS))
    args = parser.parse_args(argv)
    path = write_sample(args.out, seed=args.seed, days=args.days, symbols=tuple(args.symbols))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
