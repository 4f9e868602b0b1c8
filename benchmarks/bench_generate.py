"""Seconds per forecast of KV-cached generation against recomputing the window at every step.

    python benchmarks/bench_generate.py [--arch mini|small] [--device cpu|cuda] [--context 400]
                                        [--max-context 512] [--repeats 3] [--threads N] [--clock wall|cpu]

Random-init predictor of the --arch preset (conf/predictor/<arch>.yaml) with the
Kronos-Tokenizer-base architecture (conf/tokenizer/base.yaml), one random-walk series of
--context steps, sampling as KronosPredictor.predict's defaults (T=1, top_p=0.9). Each case runs
`generate` with use_cache=True and use_cache=False under the same seed (the forecasts must be
bit-identical) and keeps the best of --repeats timings, the two taking turns. Prints a table
with the reference implementation's measured figures where the issue gives them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kronos_exp.data import time_features
from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.forecasting.generation import generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from presets import CONF, preset  # noqa: E402

# Reference implementation, full recompute, context 400 (issue 11): seconds per forecast by
# (arch, device, pred_len, sample_count); the CPU figures are on the project's 2-core machine.
REFERENCE = {("mini", "cpu", 32, 1): 0.80, ("mini", "cpu", 120, 1): 2.85, ("mini", "cpu", 32, 8): 5.68,
             ("small", "cuda", 120, 1): 0.71}
CASES = [(32, 1), (120, 1), (32, 8)]  # (pred_len, sample_count)


def make_models(arch: str, device: torch.device) -> tuple[KronosTokenizer, Kronos]:
    torch.manual_seed(0)
    tokenizer = KronosTokenizer(**preset("tokenizer", "base"))
    model = Kronos(**preset("predictor", arch))
    return tokenizer.to(device).eval(), model.to(device).eval()


def make_inputs(context: int, pred_len: int, device: torch.device):
    """A normalised random-walk OHLCV series [1, context, 6] with 1-minute calendar stamps."""
    rng = np.random.default_rng(0)
    close = np.cumsum(rng.normal(0, 1, context))
    values = np.stack([close, close + 0.3, close - 0.3, close, rng.uniform(1, 2, context),
                       rng.uniform(1, 2, context)], axis=-1).astype(np.float32)
    values = (values - values.mean(0)) / (values.std(0) + 1e-5)
    stamps = time_features(pd.Series(pd.date_range("2024-01-02 09:30", periods=context + pred_len, freq="1min")))

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
    return tensor(values), tensor(stamps[:context]), tensor(stamps[context:])


def best_times(fns, device: torch.device, repeats: int, clock) -> tuple[list[float], list]:
    """Best of `repeats` times of each fn (after one untimed warm-up call each), and their last outputs.

    The functions take turns, so a change in the machine's load hits them alike.
    """
    outs, best = [fn() for fn in fns], [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = clock()
            outs[i] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], clock() - t)
    return best, outs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=sorted(f.stem for f in (CONF / "predictor").glob("*.yaml")), default="mini")
    p.add_argument("--device", default="cpu")
    p.add_argument("--context", type=int, default=400)
    p.add_argument("--max-context", type=int, default=512, help="KronosPredictor's default")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this process's CPU time, steadier than wall time on a busy machine with --threads 1")
    args = p.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokenizer, model = make_models(args.arch, device)

    rows = []
    for pred_len, samples in CASES:
        x, x_stamp, y_stamp = make_inputs(args.context, pred_len, device)

        def forecast(use_cache: bool):
            torch.manual_seed(0)
            return generate(tokenizer, model, x, x_stamp, y_stamp, pred_len, args.max_context, T=1.0, top_k=0,
                            top_p=0.9, sample_count=samples, use_cache=use_cache)

        (t_cached, t_full), (cached, full) = best_times([lambda: forecast(True), lambda: forecast(False)], device,
                                                        args.repeats, clock)
        ref = REFERENCE.get((args.arch, device.type, pred_len, samples))
        rows.append((f"{pred_len}", f"{samples}", f"{ref:.2f}" if ref else "-", f"{t_full:.3f}", f"{t_cached:.3f}",
                     f"{1 / t_cached:.1f}", f"{t_full / t_cached:.1f}x", f"{ref / t_cached:.1f}x" if ref else "-",
                     "yes" if torch.equal(cached, full) else "NO"))

    header = ("pred_len", "samples", "reference s", "recompute s", "cached s", "forecasts/s", "vs recompute",
              "vs reference", "identical")
    w = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print(f"Kronos-{args.arch} + Tokenizer-base (random init), context {args.context}, max_context "
          f"{args.max_context}, {device.type}, {torch.get_num_threads()} threads, best of {args.repeats} "
          f"({args.clock} time)")
    for r in [header] + rows:
        print("  ".join(f"{c:>{w[i]}}" for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
