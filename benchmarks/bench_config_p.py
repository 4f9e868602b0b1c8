"""The whole two-phase CLI run at the issue's "config P", timed from process start to exit.

    python benchmarks/bench_config_p.py [--precision fp32 auto] [--extra predictor.token_cache_mb=0] \
        [--reference DIR]

With ``--reference DIR`` (or ``KRONOS_REFERENCE=DIR``), a checkout of the reference implementation
(shiyu-coder/Kronos, kept outside this repository; its ``model/`` and ``finetune_csv/`` are what runs,
and they need ``einops`` and ``huggingface_hub``), its scripts run the same config P in the same
process tree first: ``finetune_csv/train_sequential.py`` with a config written here (random init from
the same architectures' ``config.json``, the same CSV and split, batch 16, one epoch per phase, CPU),
and each of our cases is reported as a fraction of its wall time.

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
import json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import describe  # noqa: E402
from presets import preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "kronos_exp" / "data" / "bundled" / "sample_5min.csv"
CONFIG_P = ["tokenizer=base", "predictor=mini", "data=csv", "data.lookback_window=64", "data.predict_window=8",
            "data.train_ratio=0.64", "data.val_ratio=0.16", "data.test_ratio=0.2", "tokenizer.batch_size=16",
            "predictor.batch_size=16", "tokenizer.epochs=1", "predictor.epochs=1"]


def write_csv(folder: Path) -> Path:
    frame = pd.read_csv(SAMPLE)
    first = frame[frame["symbol"] == frame["symbol"].iloc[0]].head(1500).drop(columns="symbol")
    path = folder / "config_p.csv"
    first.to_csv(path, index=False)
    return path


def reference_config(folder: Path, csv: Path, workers: int) -> Path:
    """The reference scripts' YAML for config P: random init from the presets' architectures."""
    for group, name in (("tokenizer", "base"), ("predictor", "mini")):
        (folder / group).mkdir()
        (folder / group / "config.json").write_text(json.dumps(preset(group, name)))
    path = folder / "reference.yaml"
    path.write_text(f"""\
data: {{data_path: "{csv}", lookback_window: 64, predict_window: 8, max_context: 512, clip: 5.0,
       train_ratio: 0.64, val_ratio: 0.16, test_ratio: 0.2}}
training: {{tokenizer_epochs: 1, basemodel_epochs: 1, batch_size: 16, log_interval: 50, num_workers: {workers},
           seed: 42, tokenizer_learning_rate: 0.0002, predictor_learning_rate: 0.00004, adam_beta1: 0.9,
           adam_beta2: 0.95, adam_weight_decay: 0.1, accumulation_steps: 1}}
model_paths: {{pretrained_tokenizer: "{folder / 'tokenizer'}", pretrained_predictor: "{folder / 'predictor'}",
              exp_name: config_p, base_path: "{folder / 'finetuned'}", base_save_path: "", finetuned_tokenizer: ""}}
experiment: {{use_comet: false, train_tokenizer: true, train_basemodel: true, skip_existing: false, pre_trained: false}}
device: {{use_cuda: false}}
""")
    return path


def run_reference(reference: Path, workers: int, env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of the reference scripts at config P, from process start to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = reference_config(folder, write_csv(folder), workers)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "train_sequential.py", "--config", str(config)],
                              cwd=reference / "finetune_csv", env={**env, "PYTHONPATH": str(reference)},
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode:
            sys.exit("the reference scripts failed:\n" + (proc.stdout + proc.stderr)[-3000:])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


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
    p.add_argument("--reference", type=Path, default=os.environ.get("KRONOS_REFERENCE"),
                   help="a checkout of shiyu-coder/Kronos: its scripts run config P first")
    p.add_argument("--reference-workers", type=int, default=0, help="the reference's DataLoader num_workers")
    args = p.parse_args()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    print(f"# {describe()}")
    reference_s = None
    if args.reference:
        reference_s, reference_cpu = run_reference(args.reference.resolve(), args.reference_workers, env)
        print(f"reference scripts: {reference_s:.1f} s wall, {reference_cpu:.1f} s CPU", flush=True)
    print(f"{'precision':<10}{'run s':>8}{'cpu s':>8}{'train s':>9}{'outside s':>11}{'tokenizer/s':>13}"
          f"{'predictor/s':>13}{'peak RSS GB':>13}{'of ref':>8}")
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
                  f"{r.get('tokenizer', '?'):>13}{r.get('predictor', '?'):>13}{rss:>13.2f}"
                  f"{(f'{seconds / reference_s:.2f}' if reference_s else '-'):>8}", flush=True)
    print("outside s: wall time less the phases' training; of ref: wall time over the reference scripts' wall time")


if __name__ == "__main__":
    main()
