"""The whole two-phase CLI run at the issue's "config P", timed from process start to exit.

    python benchmarks/bench_config_p.py [--precision fp32 auto] [--extra predictor.token_cache_mb=0]

Config P: a 5-minute CSV (the first 1,500 rows of the bundled sample: train/val/test 960/240/300),
lookback 64, predict 8, batch 16, 1 epoch per phase, Kronos-Tokenizer-base and Kronos-mini
architectures, random init. Each case runs the real CLI (Hydra, MLflow with a fresh SQLite store)
in a new temporary folder and reports wall time, the CPU seconds it used (what compares on a
machine shared with other jobs), the seconds spent training (the phases' ``duration_s``, read from
the run's store: their epochs, validation included, plus the predictor's ``datasets_s``: its token
cache, encoding the reference scripts do inside their epochs) and the rest of the wall time (process
start, imports, Hydra, data, the store, building the models and optimizers, packaging and
registering, exit), each phase's samples/s and the peak RSS.
A new store is copied from the empty migrated store in the user cache (tracking/store_template.py);
``--cold-store`` gives each run an empty cache, as on a machine's first run, so it migrates afresh.
"""
from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from kronos_exp.tracking.uris import default_tracking_uri, sqlite_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "kronos_exp" / "data" / "bundled" / "sample_5min.csv"
CONFIG_P = ["tokenizer=base", "predictor=mini", "data=csv", "data.lookback_window=64", "data.predict_window=8",
            "data.train_ratio=0.64", "data.val_ratio=0.16", "data.test_ratio=0.2", "tokenizer.batch_size=16",
            "predictor.batch_size=16", "tokenizer.epochs=1", "predictor.epochs=1"]
# Outside training at config P for the reference scripts (their wall time less their epochs),
# measured on the same machine kind when issue 20 was filed; the scripts are not part of this repository.
REFERENCE_OUTSIDE_S = 4.0


def write_csv(folder: Path) -> Path:
    frame = pd.read_csv(SAMPLE)
    first = frame[frame["symbol"] == frame["symbol"].iloc[0]].head(1500).drop(columns="symbol")
    path = folder / "config_p.csv"
    first.to_csv(path, index=False)
    return path


def rates(log: str) -> dict[str, str]:
    """samples/s per phase from the loop's epoch lines."""
    out = {}
    for line in log.splitlines():
        if "epoch 1/1" in line and "samples/s" in line:
            phase = line.split(" - ")[-1].split()[0]
            out[phase] = line.rsplit("val_loss", 1)[1].split()[1]
    return out


def training_seconds(cwd: Path) -> float:
    """The phases' training time from the run's own store: the duration_s that each trained phase's
    run logs with its samples_per_second (the job run's own duration_s is the whole run), plus its
    datasets_s, the predictor's token cache: encoding the reference scripts do inside their epochs."""
    with sqlite3.connect(sqlite_path(default_tracking_uri(cwd))) as db:
        return db.execute("SELECT COALESCE(SUM(value), 0) FROM metrics WHERE key IN ('duration_s', 'datasets_s') "
                          "AND run_uuid IN (SELECT run_uuid FROM metrics WHERE key = 'samples_per_second')"
                          ).fetchone()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--precision", nargs="+", default=["fp32", "auto"])
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--cold-store", action="store_true", help="no store template yet: the run migrates a new store")
    args = p.parse_args()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    print(f"{'precision':<10}{'run s':>8}{'cpu s':>8}{'train s':>9}{'outside s':>11}{'tokenizer/s':>13}"
          f"{'predictor/s':>13}{'peak RSS GB':>13}")
    for precision in args.precision:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            csv = write_csv(cwd)
            if args.cold_store:
                env["XDG_CACHE_HOME"] = str(cwd / "cache")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "kronos_exp", *CONFIG_P, f"data.path={csv}",
                                   f"precision={precision}", *args.extra], cwd=cwd, env=env, capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - started
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # on a shared machine
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # max over children so far
            r = rates(proc.stderr + proc.stdout)
            train = training_seconds(cwd)
            print(f"{precision:<10}{seconds:>8.1f}{cpu:>8.1f}{train:>9.1f}{seconds - train:>11.1f}"
                  f"{r.get('tokenizer', '?'):>13}{r.get('predictor', '?'):>13}{rss:>13.2f}", flush=True)
    print(f"outside s: wall time less the phases' training; reference scripts: ~{REFERENCE_OUTSIDE_S:.0f} s "
          "(issue 20, same machine kind)")


if __name__ == "__main__":
    main()
