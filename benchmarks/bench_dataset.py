"""Throughput and memory of the data layer alone (no model).

    python benchmarks/bench_dataset.py [--rows 1000000] [--symbols 500] [--dir FOLDER] [--samples 20000]

Writes a --rows-row CSV (--symbols series in one file, a `symbol` column, 1-minute bars) and the
same rows as Parquet, in a temporary folder (or --dir, kept and reused by later runs), then runs
each step in a child process of its own, so each peak RSS is that step's alone:

    pandas.read_csv        pd.read_csv(parse_dates=["timestamps"]) of the same file: the baseline
    load_series CSV        read + validate (kronos_exp.data.load_series)
    pandas.read_parquet    the Parquet baseline
    load_series Parquet    ours on the .parquet file ("not supported" while the reader lacks it)
    first load, cached     load_series + writing the cache of validated series (data/cache.py)
    cached load            a later job's load: the cache, memory-mapped; then every page read
    build_datasets         load + split + index (every window: no max_train_windows), then random
                           __getitem__, batch(), a DataLoader (its peak RSS counts what these keep;
                           the note gives the peak once the datasets are built)

and prints a table: time, time / pandas.read_csv, peak RSS, the RSS after the imports (python,
numpy, pandas, pyarrow, torch), and the peak above those imports over the size of the final
arrays (6 features + 5 calendar features, float32: 44 bytes a row).

Then the CLI's figures beside the reader's: for the CSV and the Parquet file, the real command

    python -m kronos_exp data=csv data.path=FILE data.symbol_column=symbol phases=tokenizer \
        tokenizer.epochs=1 data.max_train_windows=64 data.max_eval_windows=16 device=cpu precision=fp32

(the smallest training: the tiny tokenizer, one epoch of 64 windows, 16 to validate; every row is
still read, checked, cached and split) in a fresh working folder of its own (its own MLflow
SQLite store and series cache, so the load is a first one that writes the cache;
MLFLOW_DISABLE_TELEMETRY=true). `time s` is the data step as the CLI logs it ("data: N series from
... in S s"); `peak RSS MB` is the whole process's ru_maxrss (os.wait4); `imports MB` is that of the
same command on a tiny file (20,000 rows, 5 series: the imports, the model, MLflow), and
`above/arrays` the difference over the final arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ARRAY_BYTES_PER_ROW = (6 + 5) * 4


def write_frame(rows: int, symbols: int, seed: int = 0) -> pd.DataFrame:
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
    return pd.concat(frames, ignore_index=True)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# -- the steps, each run in a child process ----------------------------------------------------------

def _config(path: str):
    from kronos_exp.data import DataConfig

    return DataConfig(path=path, symbol_column="symbol", lookback_window=64, predict_window=16)


def _ours(path: str) -> dict:
    from kronos_exp.data import load_series

    try:
        series, seconds = timed(lambda: load_series(_config(path)))
    except Exception as err:  # noqa: BLE001 - a reader without Parquet says so in its own words
        return {"note": f"not supported ({type(err).__name__}: {str(err)[:70]})"}
    return {"seconds": seconds, "rows": sum(len(s) for s in series), "note": f"{len(series)} series"}


def _cached(path: str, cache: str) -> dict:
    from kronos_exp.data.cache import cached_series

    series, seconds = timed(lambda: cached_series(_config(path), Path(cache)))
    _, touch = timed(lambda: [(float(s.values.sum()), s.timestamps.max()) for s in series])
    return {"seconds": seconds, "rows": sum(len(s) for s in series), "note": f"then every page read: {touch:.2f} s"}


def _windows(path: str, samples: int, batches: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from kronos_exp.data import build_datasets

    splits, seconds = timed(lambda: build_datasets(_config(path)))
    built_mb = _peak_mb()  # the sampling below keeps its items, batches and loader batches: not the data's
    ds = splits.train
    rng = np.random.default_rng(0)
    ds[0]  # warm-up
    _, t_item = timed(lambda: [ds[int(i)] for i in rng.integers(0, len(ds), samples)])
    _, t_batch = timed(lambda: [ds.batch(b) for b in rng.integers(0, len(ds), (batches, 64))])
    loader = iter(DataLoader(ds, batch_size=64, shuffle=True, num_workers=0))
    torch.manual_seed(0)
    _, t_loader = timed(lambda: [next(loader) for _ in range(batches)])
    return {"seconds": seconds, "rows": int(sum(d.lengths.sum() for d in (splits.train, splits.val, splits.test))),
            "note": f"peak {built_mb:,.0f} MB when built; {len(splits.train):,} train windows; {samples / t_item:,.0f} items/s, "
                    f"{batches * 64 / t_batch:,.0f} batch()/s, {batches * 64 / t_loader:,.0f} DataLoader/s"}


def _peak_mb() -> float:
    """This process image's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec from the
    parent, which here holds the generated frame, so every step would seem to peak at the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(args: argparse.Namespace) -> dict:
    import pyarrow.parquet  # noqa: F401 - imports are not the step's time or memory
    import kronos_exp.data  # noqa: F401

    imports_mb = _peak_mb()
    if args.step == "pandas_csv":
        frame, seconds = timed(lambda: pd.read_csv(args.path, parse_dates=["timestamps"]))
        out = {"seconds": seconds, "rows": len(frame)}
    elif args.step == "pandas_parquet":
        frame, seconds = timed(lambda: pd.read_parquet(args.path))
        out = {"seconds": seconds, "rows": len(frame)}
    elif args.step == "ours":
        out = _ours(args.path)
    elif args.step == "cached":
        out = _cached(args.path, args.cache)
    else:
        out = _windows(args.path, args.samples, args.batches)
    return {**out, "imports_mb": imports_mb, "peak_mb": _peak_mb()}


def _child(args: argparse.Namespace, step: str, path: Path, cache: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--step", step, "--path", str(path), "--samples", str(args.samples),
               "--batches", str(args.batches)] + (["--cache", str(cache)] if cache else [])
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"note": f"failed: {proc.stderr.strip().splitlines()[-1][:90]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the CLI, in a process of its own ------------------------------------------------------------------

CLI_OVERRIDES = ["data=csv", "data.symbol_column=symbol", "phases=tokenizer", "tokenizer.epochs=1",
                 "data.max_train_windows=64", "data.max_eval_windows=16", "device=cpu", "precision=fp32"]
_DATA_LINE = re.compile(r"data: \d+ series from \d+ file\(s\) in ([0-9.]+) s")


def _cli(path: Path) -> dict:
    """`python -m kronos_exp` on `path` in a fresh folder: the data step's seconds from its log, its
    peak RSS (ru_maxrss of this child alone, by os.wait4)."""
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(Path(work) / "cli.log", "w+") as log:
            proc = subprocess.Popen([sys.executable, "-m", "kronos_exp", f"data.path={path}", *CLI_OVERRIDES],
                                    cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.seek(0)
            text = log.read()
    found = _DATA_LINE.search(text)
    if proc.returncode != 0 or not found:
        last = text.strip().splitlines()[-1] if text.strip() else f"exit {proc.returncode}"
        return {"note": f"failed: {last[:90]}"}
    return {"seconds": float(found.group(1)), "peak_mb": usage.ru_maxrss / 1024}


# -- the parent: files, children, table ---------------------------------------------------------------

def _files(folder: Path, rows: int, symbols: int) -> tuple[Path, Path, str]:
    csv, parquet = folder / f"bench_{rows}_{symbols}.csv", folder / f"bench_{rows}_{symbols}.parquet"
    if csv.exists() and parquet.exists():
        return csv, parquet, "reused"
    # In a child: the parent, whose RSS each child's ru_maxrss starts from, never holds the frame.
    t = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--step", "write", "--path", str(csv), "--rows", str(rows),
                    "--symbols", str(symbols)], check=True)
    return csv, parquet, f"written in {time.perf_counter() - t:.0f} s"


def _write(csv: Path, rows: int, symbols: int) -> None:
    frame = write_frame(rows, symbols)
    frame.to_csv(csv, index=False)
    frame.to_parquet(csv.with_suffix(".parquet"), index=False)


def _table(results: list[tuple[str, dict]], baseline: float | None, array_mb: float) -> None:
    header = ("step", "time s", "vs read_csv", "peak RSS MB", "imports MB", "above/arrays", "notes")
    rows = [header]
    for name, r in results:
        s = r.get("seconds")
        rows.append((name, "-" if s is None else f"{s:.2f}" if s >= 0.1 else f"{s:.3f}",
                     f"{s / baseline:.2f}x" if s is not None and baseline else "-",
                     f"{r['peak_mb']:,.0f}" if "peak_mb" in r else "-",
                     f"{r['imports_mb']:,.0f}" if "imports_mb" in r else "-",
                     f"{(r['peak_mb'] - r['imports_mb']) / array_mb:.2f}x" if "seconds" in r and "imports_mb" in r else "-",
                     r.get("note", "")))
    w = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        print("  ".join(f"{c:<{w[i]}}" if i == 0 else f"{c:>{w[i]}}" for i, c in enumerate(r[:-1])) + "  " + r[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--dir", help="keep the files here and reuse them on the next run (default: a temporary folder)")
    p.add_argument("--samples", type=int, default=20_000, help="random __getitem__ calls")
    p.add_argument("--batches", type=int, default=300, help="batches of 64 (batch() and DataLoader)")
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step == "write":
        _write(Path(args.path), args.rows, args.symbols)
        return
    if args.step:
        print(json.dumps(_step(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir) if args.dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv, parquet, how = _files(folder, args.rows, args.symbols)
        cache = Path(tmp) / "cache"  # always empty at first: the first cached load writes it
        results = [(name, _child(args, step, path, cache if step == "cached" else None)) for name, step, path in [
            ("pandas.read_csv", "pandas_csv", csv),
            ("load_series CSV", "ours", csv),
            ("pandas.read_parquet", "pandas_parquet", parquet),
            ("load_series Parquet", "ours", parquet),
            ("first load, cached", "cached", csv),
            ("cached load", "cached", csv),
            ("build_datasets", "windows", csv),
        ]]
        array_mb = args.rows * ARRAY_BYTES_PER_ROW / 2**20
        print(f"{args.rows:,} rows, {args.symbols} series; CSV {csv.stat().st_size / 1e6:,.0f} MB, Parquet "
              f"{parquet.stat().st_size / 1e6:,.0f} MB ({how}); final arrays {array_mb:,.0f} MB; one process per step")
        _table(results, results[0][1].get("seconds"), array_mb)

        (Path(tmp) / "tiny").mkdir()
        tiny_csv, _, _ = _files(Path(tmp) / "tiny", 20_000, 5)
        base = {kind: _cli(tiny) for kind, tiny in (("CSV", tiny_csv), ("Parquet", tiny_csv.with_suffix(".parquet")))}
        cli = []
        for kind, path in (("CSV", csv), ("Parquet", parquet)):
            r = _cli(path)
            if "peak_mb" in r and "peak_mb" in base[kind]:
                r["imports_mb"] = base[kind]["peak_mb"]
            r.setdefault("note", f"python -m kronos_exp {' '.join(CLI_OVERRIDES[:2])} ... (data step as logged)")
            cli.append((f"CLI {kind}", r))
        print(f"\nthe CLI: its data step as it logs it; peak RSS of the whole process; imports MB = the same "
              f"command's on a {20_000:,}-row file")
        _table(cli, results[0][1].get("seconds"), array_mb)


if __name__ == "__main__":
    main()
