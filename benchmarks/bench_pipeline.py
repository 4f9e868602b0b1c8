"""Wall time of the default run and of its reuse, and training throughput per phase and precision.

    python benchmarks/bench_pipeline.py [--precisions fp32 bf16] [--extra data.max_train_windows=1024]

Each case runs the real CLI in a fresh temporary folder (its own SQLite store), then once more
with skip_existing=true, and reads samples_per_second and duration_s from MLflow. Targets: the
default run under 3 minutes on a 2-core CPU; the reuse run a small fraction of it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from kronos_exp.tracking.uris import default_tracking_uri


def timed_run(cwd: Path, overrides: list[str]) -> float:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kronos_exp", "phases=both", *overrides], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def phase_metrics(cwd: Path) -> dict[str, dict[str, float]]:
    client = MlflowClient(default_tracking_uri(cwd))
    runs = client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id],
                              filter_string="tags.skipped = 'false'")
    return {r.data.tags["phase"]: r.data.metrics for r in runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    args = p.parse_args()
    print(f"{'precision':<10}{'run s':>8}{'reuse s':>9}{'tokenizer samples/s':>21}{'predictor samples/s':>21}")
    for precision in args.precisions:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            first = timed_run(cwd, [f"precision={precision}", *args.extra])
            again = timed_run(cwd, [f"precision={precision}", "skip_existing=true", *args.extra])
            m = phase_metrics(cwd)
            print(f"{precision:<10}{first:>8.1f}{again:>9.1f}{m['tokenizer']['samples_per_second']:>21.0f}"
                  f"{m['predictor']['samples_per_second']:>21.0f}")


if __name__ == "__main__":
    main()
