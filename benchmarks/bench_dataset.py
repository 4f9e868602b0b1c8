"""Throughput of the data layer alone (no model).

    python benchmarks/bench_dataset.py [--rows 1000000] [--symbols 4] [--samples 20000]

Writes a --rows-row CSV (--symbols series in one file, 1-minute bars) to a temporary folder, then
times load_series (read + validate), build_datasets (loading + splitting + indexing), random
__getitem__ over the train split, the batched fast path, and a torch DataLoader (batch_size 64,
num_workers 0, shuffled). Prints a small table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kronos_exp.data import DataConfig, build_datasets, load_series


def write_csv(path: Path, rows: int, symbols: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per = rows // symbols
    frames = []
    for k in range(symbols):
        n = per if k < symbols - 1 else rows - per * (symbols - 1)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        open_ = np.r_[close[0], close[:-1]]
        spread = np.abs(rng.normal(0, 5e-4, n)) * close
        volume = rng.integers(100, 10_000, n)
        frames.append(
            pd.DataFrame(
                {
                    "timestamps": pd.date_range("2015-01-01", periods=n, freq="1min"),
                    "symbol": f"SYM{k}",
                    "open": open_.round(4),
                    "high": (np.maximum(open_, close) + spread).round(4),
                    "low": (np.minimum(open_, close) - spread).round(4),
                    "close": close.round(4),
                    "volume": volume,
                    "amount": (volume * close).round(2),
                }
            )
        )
    pd.concat(frames).to_csv(path, index=False)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--symbols", type=int, default=4)
    p.add_argument("--samples", type=int, default=20_000, help="random __getitem__ calls")
    p.add_argument("--batches", type=int, default=300, help="DataLoader batches of 64")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        _, t_write = timed(lambda: write_csv(path, args.rows, args.symbols))
        size_mb = path.stat().st_size / 1e6
        cfg = DataConfig(path=str(path), symbol_column="symbol", lookback_window=64, predict_window=16)
        series, t_load = timed(lambda: load_series(cfg))
        splits, t_build = timed(lambda: build_datasets(cfg))

    ds = splits.train
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ds), args.samples)
    ds[0]  # warm-up
    _, t_item = timed(lambda: [ds[int(i)] for i in idx])
    batches = rng.integers(0, len(ds), (args.batches, 64))
    _, t_batch = timed(lambda: [ds.batch(b) for b in batches])
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=0)

    def run_loader() -> int:
        n = 0
        for k, (x, stamp) in enumerate(loader):
            n += len(x)
            if k + 1 == args.batches:
                break
        return n

    n_loader, t_loader = timed(run_loader)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = [
        ("CSV written (not timed work)", f"{size_mb:.0f} MB, {args.rows:,} rows", f"{t_write:.2f} s"),
        ("load_series (read+validate)", f"{len(series)} series", f"{t_load:.2f} s"),
        ("build_datasets (load+split+index)", f"{len(splits.train):,}/{len(splits.val):,}/{len(splits.test):,} windows", f"{t_build:.2f} s"),
        ("__getitem__, random", f"{args.samples:,} samples", f"{args.samples / t_item:,.0f} samples/s"),
        ("batch(64 indices)", f"{args.batches * 64:,} samples", f"{args.batches * 64 / t_batch:,.0f} samples/s"),
        ("DataLoader bs=64 workers=0", f"{n_loader:,} samples", f"{n_loader / t_loader:,.0f} samples/s"),
        ("peak RSS", "", f"{peak_mb:,.0f} MB"),
    ]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'step':<{w[0]}}  {'size':<{w[1]}}  {'result':>{w[2]}}")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}")


if __name__ == "__main__":
    main()
