"""Training throughput per phase: the bare step against the shared loop, where a step's time goes,
peak memory, and model FLOP utilisation against a matmul rate measured in the same run.

    python benchmarks/bench_train.py                       # config P on this machine, fp32 and bf16
    python benchmarks/bench_train.py --device cuda --precision bf16 --compile --phase predictor \\
        --arch small --tokenizer base --batch 64 --lookback 511 --predict 1 --train-rows 20000

Defaults are the issue's "config P": lookback 64 + predict 8, batch 16, train/val 960/240 rows of a
5-minute series, Kronos-Tokenizer-base and Kronos-mini architectures, random init. For each phase
and precision it reports:

- bare step: samples/s of encode (predictor: the frozen tokenizer) + forward + loss + backward +
  AdamW on one batch already on the device, split into forward+backward and optimizer time;
- loop: samples/s of ``kronos_exp.train.fit`` over the data in steady state (after warm-up
  steps, validation included), its ratio to the bare step, and per step the time spent building
  batches and in validation;
- peak RSS (and peak CUDA memory); MFU = 6 * trainable params * tokens/s over the dense matmul
  rate measured here in the same dtype, and with attention's matmuls added (PaLM's count);
- with --epochs > 1, the loop's steady state is the last epoch (its validation included);
- the ceiling: the step's FLOPs as torch counts them (forward + backward, every matmul, the
  frozen tokenizer's encode included) and the samples/s that matmul rate allows at 100% use;
- the ceiling where the work is: every matmul of one step (forward + backward, recorded at dispatch
  with its shapes, dtype and layout) replayed alone, so the step's matmul time at those rates, the
  FLOP-weighted rate at the model's own shapes, and MFU against it (fused attention is not replayed:
  its share of the FLOPs of matmuls and attention together is reported beside; on a CPU in bf16
  attention is two batched matmuls, replayed with the others, and that share is 0);
- the memory traffic outside the matmuls: the bytes every other op of one step (the optimizer's
  included) reads and writes, counted at dispatch, that traffic's time at the memory bandwidth
  measured here (``c = a + b`` over arrays larger than the caches), and the bound it sets: the
  matmuls' share of a step whose other ops each ran at that bandwidth, the most a step run op by
  op can reach; only fused ops (fewer passes over memory) go past it;
- a per-op profile of a few steady-state bare steps (``torch.profiler``, self time) grouped as
  matmul, attention, norms, elementwise, quantizer, optimizer, casts and other (--profile-steps 0
  skips it);
- with fp32 and bf16 both asked for: the quality guard, bf16 validation loss within 2% of fp32
  after the same steps from the same seed.

Imports torch, numpy, pandas and kronos_exp's model/data/train packages only (no MLflow, no Hydra),
so it runs on a bare GPU image.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from kronos_exp.data.windows import WindowDataset, time_features  # noqa: E402
from kronos_exp.heap import keep_freed_memory  # noqa: E402
from kronos_exp.model import Kronos, KronosTokenizer  # noqa: E402
from kronos_exp.model import blocks  # noqa: E402
from kronos_exp.model.blocks import RMSNorm  # noqa: E402
from kronos_exp.model.losses import predictor_loss, tokenizer_loss  # noqa: E402
from kronos_exp.model.quantizer import BSQuantizer  # noqa: E402
from kronos_exp.train import FitSettings, fit  # noqa: E402
from kronos_exp.train.batches import Batches, to_device  # noqa: E402
from kronos_exp.train.loop import forward_backward, grad_scaler, on_gpu, optimizer_step  # noqa: E402
from kronos_exp.train.optim import make_optimizer  # noqa: E402
from kronos_exp.train.precision import full_precision, resolve_device, resolve_precision  # noqa: E402
from kronos_exp.train.token_cache import tokenize_within  # noqa: E402

from host import describe  # noqa: E402
from presets import preset  # noqa: E402

# --clock cpu: this process's CPU time instead of wall time. On a machine shared with other jobs,
# with --threads 1, it counts only the time this benchmark ran, so figures compare across runs.
clock = time.perf_counter


def synthetic_split(rows: int, seed: int, lookback: int, predict: int) -> WindowDataset:
    """A 5-minute OHLCV random walk of ``rows`` rows as windows."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 5e-4, rows)) * close
    volume = rng.lognormal(8, 1, rows)
    values = np.stack([open_, np.maximum(open_, close) + spread, np.minimum(open_, close) - spread, close, volume,
                       volume * close], axis=1).astype(np.float32)
    stamps = time_features(pd.date_range("2024-01-01", periods=rows, freq="5min"))
    return WindowDataset([values], [stamps], lookback, predict)


class TokenizerObjective:
    val_key = "recon_full_loss"

    def loss(self, model, batch):
        return tokenizer_loss(model, batch[0])

    def epoch_metrics(self, model, loader):
        return {}


class PredictorObjective:
    """What PredictorPhase computes: cached tokens, or raw windows encoded in fp32 by the frozen tokenizer."""
    val_key = "loss"

    def __init__(self, tokenizer: KronosTokenizer):
        self.tokenizer = tokenizer

    @torch.no_grad()
    def encode(self, x):
        device = next(self.tokenizer.parameters()).device
        with full_precision(device):
            return self.tokenizer.encode(x.to(device).float(), half=True)

    def loss(self, model, batch):
        if len(batch) == 3:
            s1, s2, stamp = batch
        else:
            x, stamp = batch
            s1, s2 = self.encode(x)
        return predictor_loss(model, s1, s2, stamp, teacher_forcing=True)

    def epoch_metrics(self, model, loader):
        return {}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attention_layers(phase: str, args) -> int:
    """Attention layers a training sample passes, times d_model: the tokenizer decodes twice (s1
    only, then s1 + s2); the predictor adds its dependency layer."""
    if phase == "tokenizer":
        arch = preset("tokenizer", args.tokenizer)
        return (arch["n_enc_layers"] + 2 * arch["n_dec_layers"]) * arch["d_model"]
    arch = preset("predictor", args.arch)
    return (arch["n_layers"] + 1) * arch["d_model"]


def matmul_rate(device: torch.device, precision: str, seconds: float = 1.0) -> float:
    """Dense matmul FLOP/s in the training dtype on this machine, now."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    count, started = 0, clock()
    while clock() - started < seconds:
        for _ in range(4):
            a @ b
        count += 4
        sync(device)
    return 2 * n ** 3 * count / (clock() - started)


GEMMS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
         torch.ops.aten.baddbmm.default}


class StepOps(TorchDispatchMode):
    """Each distinct matmul call of a step, below autocast, so dtypes are those that ran, and the bytes
    every other op reads and writes (views move none): what that work costs at the memory bandwidth."""

    def __init__(self):
        super().__init__()
        self.calls: dict[tuple, int] = {}
        self.sdpa_flop = 0  # fused attention, outside the matmuls: 4 * B * H * L * S * E forward, twice that back
        self.traffic = 0  # bytes read and written by the ops outside the matmuls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.name():
            backward = "backward" in func.name()  # (grad_out, q, k, ...) rather than (q, k, ...)
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            q, k = tensors[backward], tensors[1 + backward]
            self.sdpa_flop += (8 if backward else 4) * int(np.prod(q.shape)) * k.shape[-2]
        elif func in GEMMS:
            spec = tuple(("t", tuple(a.shape), a.dtype, a.dim() >= 2 and a.stride(-2) == 1 and a.shape[-1] > 1)
                         if isinstance(a, torch.Tensor) else a for a in args)
            key = (func, spec, tuple(sorted((kwargs or {}).items())))
            self.calls[key] = self.calls.get(key, 0) + 1
        out = func(*args, **(kwargs or {}))
        if func not in GEMMS:
            self.traffic += op_traffic(func, args, kwargs or {}, out)
        return out


def _tensors(values) -> list[torch.Tensor]:
    return [t for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor)]


def _nbytes(t: torch.Tensor) -> int:
    """The bytes a pass over ``t`` touches: its elements, or its storage when it is a broadcast of less."""
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


def op_traffic(func, args, kwargs, out) -> int:
    """Bytes ``func`` read (its tensor inputs) and wrote (its new outputs, or the inputs it updates in
    place); 0 for an op whose outputs are views of its inputs."""
    inputs = _tensors((args, kwargs))
    given = [args[i] if i < len(args) else kwargs.get(a.name) for i, a in enumerate(func._schema.arguments)]
    written = [t for a, value in zip(func._schema.arguments, given) if a.alias_info and a.alias_info.is_write
               for t in _tensors(value)]
    storages = {t.untyped_storage().data_ptr() for t in inputs}
    fresh = [t for t in _tensors(out) if t.untyped_storage().data_ptr() not in storages]
    if not written and not fresh:
        return 0
    return sum(map(_nbytes, inputs)) + sum(map(_nbytes, written)) + sum(map(_nbytes, fresh))


def memory_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Bytes/s of ``c = a + b`` over fp32 arrays far larger than the caches, in place of the memory."""
    n = megabytes * 2 ** 20 // 4
    a, b, c = (torch.ones(n, device=device) for _ in range(3))
    torch.add(a, b, out=c)
    sync(device)
    reps, started = 5, clock()
    for _ in range(reps):
        torch.add(a, b, out=c)
    sync(device)
    return 3 * 4 * n * reps / (clock() - started)


def gemm_flops(spec) -> int:
    """2 * m * k * n (times the batch) from the last two operands' shapes."""
    a, b = spec[-2][1], spec[-1][1]
    return 2 * int(np.prod(a)) * b[-1]


def shape_rates(calls: dict, device: torch.device, seconds: float = 0.05) -> dict:
    """Each recorded matmul replayed alone (same shapes, dtype, transposed layout): the step's
    matmul time at those rates and its FLOP-weighted rate."""
    total_s = total_flop = 0.0
    for (func, spec, kwargs), count in calls.items():
        args = [(torch.randn(*s[1][:-2], s[1][-1], s[1][-2], device=device, dtype=s[2]).transpose(-1, -2) if s[3]
                 else torch.randn(s[1], device=device, dtype=s[2])) if isinstance(s, tuple) and s[:1] == ("t",)
                else s for s in spec]
        func(*args, **dict(kwargs))
        sync(device)
        reps, started = 0, clock()
        while reps < 3 or clock() - started < seconds:
            func(*args, **dict(kwargs))
            reps += 1
            sync(device)
        total_s += count * (clock() - started) / reps
        total_flop += count * gemm_flops(spec)
    return {"gemm_calls": sum(calls.values()), "gemm_shapes": len(calls), "gemm_ms": 1e3 * total_s,
            "shape_tflops": total_flop / total_s / 1e12}


SCOPES = ("optimizer", "quantizer", "norms", "attention")
CATEGORIES = ("matmul", "attention", "norms", "elementwise", "quantizer", "optimizer", "casts", "other")
ELEMENTWISE = {"add", "add_", "mul", "mul_", "div", "div_", "sub", "rsub", "pow", "neg", "exp", "log", "sqrt",
               "rsqrt", "silu", "gelu", "sigmoid", "tanh", "where", "abs", "sign", "clamp", "maximum", "minimum",
               "mean", "sum", "fill_", "zero_", "lerp_", "addcmul_", "addcdiv_", "threshold_backward"}


def op_category(name: str) -> str | None:
    """The category an op or autograd node's name says, or None when it says nothing."""
    op = name.split(": ")[-1].split("::")[-1].lower().removesuffix("backward0").removesuffix("backward1")
    if op in ("mm", "addmm", "bmm", "baddbmm", "linear", "matmul"):
        return "matmul"
    if "attention" in op or "softmax" in op:
        return "attention"
    if "norm" in op:
        return "norms"
    if op in ("to", "_to_copy", "tocopy", "type_as"):
        return "casts"
    if op in ELEMENTWISE or op.removesuffix("_") in ELEMENTWISE:
        return "elementwise"
    return None


def categorize(events) -> dict[str, float]:
    """Self time per category: a benchmark scope (optimizer, quantizer, norms, attention) on the event's stack
    wins, then its outermost op with a category; backward nodes follow their forward op's scope.
    On CUDA the self time is the kernels' time, attached to the CPU ops that launched them."""
    events = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    use_device = any(e.self_device_time_total for e in events)
    chains = {}
    for e in events:
        chain, node = [], e
        while node is not None:
            chain.append(node)
            node = node.cpu_parent
        chains[id(e)] = chain[::-1]
    forward_scope = {}
    for e in events:
        scope = next((n.name for n in chains[id(e)] if n.name in SCOPES), None)
        if scope and e.sequence_nr >= 0 and "evaluate_function" not in e.name:
            forward_scope.setdefault(e.sequence_nr, scope)
    out = dict.fromkeys(CATEGORIES, 0.0)
    for e in events:
        category = None
        for n in chains[id(e)]:
            if n.name in SCOPES:
                category = n.name
            elif "evaluate_function" in n.name and n.sequence_nr in forward_scope:
                category = forward_scope[n.sequence_nr]
            else:
                category = op_category(n.name)
            if category:
                break
        out[category or "other"] += e.self_device_time_total if use_device else e.self_cpu_time_total
    return out


def scoped(modules, name: str) -> list:
    """Wraps each module's forward in a profiler scope; the modules, to unwrap after."""
    for m in modules:
        forward = m.forward
        m.forward = lambda *a, _f=forward, **k: _scope_call(name, _f, *a, **k)
    return list(modules)


def _scope_call(name, forward, *args, **kwargs):
    with record_function(name):
        return forward(*args, **kwargs)


def op_profile(model, objective, batch, s, scaler, optimizer, params, steps: int) -> dict[str, float]:
    """ms per step in each category over ``steps`` profiled bare steps."""
    modules = [*model.modules(), *getattr(getattr(objective, "tokenizer", None), "modules", list)()]
    wrapped = scoped([m for m in modules if isinstance(m, BSQuantizer)], "quantizer")
    wrapped += scoped([m for m in modules if isinstance(m, RMSNorm)], "norms")
    # Attention as the blocks call it: a fused kernel, or on a CPU in bf16 two matmuls around a softmax.
    attention = blocks.attention
    blocks.attention = lambda *a, **k: _scope_call("attention", attention, *a, **k)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device.type == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            for _ in range(steps):
                forward_backward(model, objective, batch, s, scaler)
                with record_function("optimizer"):
                    optimizer_step(optimizer, scaler, params, s.grad_clip)
            sync(s.device)
    finally:
        blocks.attention = attention
        for m in wrapped:
            del m.forward
    return {k: v / 1e3 / steps for k, v in categorize(prof.events()).items()}


def settings(args, device, precision) -> FitSettings:
    return FitSettings(epochs=args.epochs, lr=1e-4, batch_size=args.batch, weight_decay=0.1, adam_betas=(0.9, 0.95),
                       pct_start=0.03, grad_clip=2.0, accumulation_steps=1, log_interval=args.log_interval,
                       device=device, precision=precision, num_workers=args.workers, seed=args.seed,
                       compile=args.compile)


def build(phase: str, args, device):
    torch.manual_seed(args.seed)
    if phase == "tokenizer":
        return KronosTokenizer(**preset("tokenizer", args.tokenizer)), TokenizerObjective()
    tokenizer = KronosTokenizer(**preset("tokenizer", args.tokenizer)).to(device).eval().requires_grad_(False)
    torch.manual_seed(args.seed)
    return Kronos(**preset("predictor", args.arch)), PredictorObjective(tokenizer)


def bare_step(phase, args, device, precision, train) -> dict:
    """Encode + forward + loss + backward + AdamW on one device-resident batch, repeated."""
    model, objective = build(phase, args, device)
    model.to(device).train()
    s = settings(args, device, precision)
    runner = torch.compile(model) if args.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scaler = make_optimizer(params, s), grad_scaler(device, precision)
    batch = to_device(train.batch(np.arange(args.batch)), device)
    fb, opt = [], []
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = clock()
        forward_backward(runner, objective, batch, s, scaler)
        sync(device)
        t1 = clock()
        optimizer_step(optimizer, scaler, params, s.grad_clip)
        sync(device)
        if i >= args.warmup:
            fb.append(t1 - t0)
            opt.append(clock() - t1)
    step = float(np.mean(fb) + np.mean(opt))
    # Profiled with the eager model: scopes wrapped around a compiled one would break its graph.
    profiled = op_profile(model, objective, batch, s, scaler, optimizer, params,
                          args.profile_steps) if args.profile_steps and not args.compile else {}
    with FlopCounterMode(display=False) as counter, StepOps() as ops:  # one more step, counted, not timed
        forward_backward(model, objective, batch, s, scaler)
        optimizer_step(optimizer, scaler, params, s.grad_clip)
    gemm_flop = sum(n * gemm_flops(spec) for (_, spec, _), n in ops.calls.items())
    return {"bare_samples_s": args.batch / step, "fwd_bwd_ms": 1e3 * float(np.mean(fb)),
            "optimizer_ms": 1e3 * float(np.mean(opt)), "params": sum(p.numel() for p in params),
            "gflop_per_sample": counter.get_total_flops() / args.batch / 1e9,
            "sdpa_flop_share": ops.sdpa_flop / max(ops.sdpa_flop + gemm_flop, 1),
            "traffic_mb": ops.traffic / 1e6, "bandwidth_gbs": memory_bandwidth(device) / 1e9,
            **shape_rates(ops.calls, device), **({"profile_ms": profiled} if profiled else {})}


def loop(phase, args, device, precision, train, val) -> dict:
    """``fit`` over the data; steady-state rate from the first log line after warm-up to the end."""
    model, objective = build(phase, args, device)
    s = settings(args, device, precision)
    if phase == "predictor":
        t0 = time.perf_counter()
        sets = tokenize_within(args.token_cache_mb, {"train": train, "val": val}, objective.encode,
                               objective.tokenizer.s1_bits, objective.tokenizer.s2_bits, device=device)
        cache_s = time.perf_counter() - t0
        train, val = sets["train"], sets["val"]
    else:
        cache_s = 0.0
    marks: list[tuple[int, float]] = []  # (step, time) of each train log line
    val_time = 0.0
    t0 = clock()
    batches = Batches(on_gpu(train, device), args.batch)  # what the loop iterates
    n_batches = sum(1 for _ in batches)
    sync(device)
    data_ms = 1e3 * (clock() - t0) / n_batches

    def log_metrics(metrics, step):
        nonlocal val_time
        if "train_loss" in metrics:
            marks.append((step, clock()))
        else:  # validation ran since the epoch's last train log line
            val_time += clock() - marks[-1][1]

    result = fit(model, objective, train, val, s, log_metrics=log_metrics, on_best=lambda *a: None, desc=phase)
    ended = clock()
    # With several epochs the steady state is the last one (its validation included), so one-time
    # costs of the first (compiling, cuBLAS picking kernels for the validation shapes) stay out.
    start = result.steps * (args.epochs - 1) // args.epochs + args.warmup
    first = next(((st, t) for st, t in marks if st >= start), marks[0])
    steady = (result.steps - first[0]) * args.batch / (ended - first[1]) if result.steps > first[0] else float("nan")
    return {"loop_samples_s": steady, "loop_samples_s_all": result.samples_per_second, "data_ms": data_ms,
            "val_ms_per_step": 1e3 * val_time / max(result.steps, 1), "val_loss": result.best_val_loss,
            "steps": result.steps, "token_cache_s": cache_s, "fit_s": result.duration_s}


def peak_memory(device) -> dict:
    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(device)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=["tokenizer", "predictor", "both"], default="both")
    p.add_argument("--tokenizer", default="base", help="conf/tokenizer preset")
    p.add_argument("--arch", default="mini", help="conf/predictor preset")
    p.add_argument("--lookback", type=int, default=64)
    p.add_argument("--predict", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-rows", type=int, default=960)
    p.add_argument("--val-rows", type=int, default=240)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--mode", choices=["step", "loop", "both"], default="both")
    p.add_argument("--steps", type=int, default=20, help="timed bare steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (bare step and loop)")
    p.add_argument("--profile-steps", type=int, default=3, help="bare steps profiled per op (0: no profile)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=5)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--token-cache-mb", type=float, default=256.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this process's CPU time (use with --threads 1 on a shared machine)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fit does: the bare step too reuses freed memory
    device = resolve_device(args.device)
    train = synthetic_split(args.train_rows, 0, args.lookback, args.predict)
    val = synthetic_split(args.val_rows, 1, args.lookback, args.predict)
    phases = ["tokenizer", "predictor"] if args.phase == "both" else [args.phase]
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{describe()}, {torch.get_num_threads()} threads")
    print(f"# {name}; {args.clock} clock; torch {torch.__version__}; windows train/val {len(train)}/{len(val)}; "
          f"batch {args.batch}; window {args.lookback}+{args.predict}; compile={args.compile}", flush=True)
    rows = []
    for phase in phases:
        for precision in args.precision:
            precision = resolve_precision(precision, device)
            row = {"phase": phase, "precision": precision, "compile": args.compile,
                   "arch": args.tokenizer if phase == "tokenizer" else args.arch}
            peak = matmul_rate(device, precision)
            row["matmul_tflops"] = peak / 1e12
            row.update(bare_step(phase, args, device, precision, train) if args.mode != "loop" else {})
            row.update(loop(phase, args, device, precision, train, val) if args.mode != "step" else {})
            if "params" not in row:
                row["params"] = sum(q.numel() for q in build(phase, args, device)[0].parameters() if q.requires_grad)
            tokens = args.lookback + args.predict - (1 if phase == "predictor" else 0)
            best = row.get("loop_samples_s", row.get("bare_samples_s"))
            row["mfu"] = 6 * row["params"] * tokens * best / peak
            # PaLM's count adds attention's score and value matmuls: 12 * layers * d_model * tokens per token.
            row["mfu_attn"] = row["mfu"] + 12 * attention_layers(phase, args) * tokens ** 2 * best / peak
            if "gflop_per_sample" in row:  # what no implementation of this step can beat at this matmul rate
                row["ceiling_samples_s"] = peak / (row["gflop_per_sample"] * 1e9)
            if "shape_tflops" in row:  # the same work against the rate the model's own matmul shapes reach
                row["mfu_shapes"] = row["mfu"] * peak / (row["shape_tflops"] * 1e12)
                row["gemm_share"] = row["gemm_ms"] / (row["fwd_bwd_ms"] + row["optimizer_ms"])
                # The rest of the step moved at the memory bandwidth: what no op-by-op (unfused) step can beat.
                row["traffic_ms"] = row["traffic_mb"] / row["bandwidth_gbs"]
                row["unfused_bound"] = row["gemm_ms"] / (row["gemm_ms"] + row["traffic_ms"])
            if "loop_samples_s" in row and "bare_samples_s" in row:
                row["loop_over_bare"] = row["loop_samples_s"] / row["bare_samples_s"]
            row.update(peak_memory(device))
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print_table(rows)
    print_ceilings(rows)
    print_profiles(rows)
    guard = quality_guard(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "args": vars(args), "rows": rows, "guard": guard},
                                              indent=1))


def print_table(rows: list[dict]) -> None:
    cols = [("phase", "{:<10}"), ("precision", "{:<6}"), ("bare_samples_s", "{:>8.1f}"), ("loop_samples_s", "{:>8.1f}"),
            ("loop_over_bare", "{:>6.2f}"), ("fwd_bwd_ms", "{:>8.1f}"), ("optimizer_ms", "{:>7.1f}"),
            ("data_ms", "{:>6.2f}"), ("val_ms_per_step", "{:>6.1f}"), ("mfu", "{:>6.1%}"), ("mfu_attn", "{:>6.1%}"),
            ("ceiling_samples_s", "{:>8.0f}"), ("peak_rss_gb", "{:>6.2f}")]
    heads = ["phase", "prec", "bare/s", "loop/s", "loop/b", "f+b ms", "opt ms", "data", "val", "MFU", "+attn", "ceiling", "RSS GB"]
    print()
    print(" ".join(f"{h:>8}" for h in heads))
    for r in rows:
        print(" ".join(f"{(f.format(r[c]) if c in r else '-'):>8}" for c, f in cols))


def print_ceilings(rows: list[dict]) -> None:
    """The matmul rate at the step's own shapes against the large-square one."""
    rows = [r for r in rows if "shape_tflops" in r]
    if not rows:
        return
    print("\nmatmul rate at the model's own shapes (each of a step's matmuls replayed alone):")
    print(f"{'phase':>10} {'prec':>6} {'square':>8} {'shapes':>8} {'ratio':>6} {'calls':>6} {'shapes#':>7} "
          f"{'mm ms':>8} {'of step':>7} {'MFU@sh':>7} {'sdpa fl':>7}")
    for r in rows:
        print(f"{r['phase']:>10} {r['precision']:>6} {r['matmul_tflops']:>8.3f} {r['shape_tflops']:>8.3f} "
              f"{r['shape_tflops'] / r['matmul_tflops']:>6.2f} {r['gemm_calls']:>6} {r['gemm_shapes']:>7} "
              f"{r['gemm_ms']:>8.2f} {r['gemm_share']:>7.1%} {r['mfu_shapes']:>7.1%} {r['sdpa_flop_share']:>7.1%}")
    print("(TFLOP/s; mm ms: the step's matmul time at the replayed rates; sdpa fl: fused attention's share of the "
          "FLOPs of matmuls and attention together)")
    print("\nmemory traffic outside the matmuls (bytes each other op of one step reads and writes):")
    print(f"{'phase':>10} {'prec':>6} {'MB':>8} {'GB/s':>7} {'ms':>7} {'step ms':>8} {'mm ms':>8} {'bound':>7}")
    for r in rows:
        print(f"{r['phase']:>10} {r['precision']:>6} {r['traffic_mb']:>8.0f} {r['bandwidth_gbs']:>7.1f} "
              f"{r['traffic_ms']:>7.1f} {r['fwd_bwd_ms'] + r['optimizer_ms']:>8.1f} {r['gemm_ms']:>8.1f} "
              f"{r['unfused_bound']:>7.1%}")
    print("(GB/s: c = a + b over arrays larger than the caches; ms: the traffic at that rate; bound: the matmuls' "
          "share of a step whose other ops each ran at that rate, the most an op-by-op step reaches; "
          "less traffic needs fused ops)")


def print_profiles(rows: list[dict]) -> None:
    """Per phase and precision, where a profiled bare step's time goes (self time)."""
    for r in rows:
        if "profile_ms" not in r:
            continue
        total = sum(r["profile_ms"].values())
        print(f"\nprofile {r['phase']} {r['precision']}: {total:.2f} ms per profiled step")
        for category, ms in r["profile_ms"].items():
            print(f"  {category:<12} {ms:>9.2f} ms {ms / total if total else 0:>7.1%}")


def quality_guard(rows: list[dict]) -> dict:
    """bf16 validation loss within 2% of fp32's after the same steps from the same seed."""
    out = {}
    for phase in {r["phase"] for r in rows}:
        losses = {r["precision"]: r.get("val_loss") for r in rows if r["phase"] == phase}
        if losses.get("fp32") and losses.get("bf16"):
            rel = abs(losses["bf16"] - losses["fp32"]) / abs(losses["fp32"])
            out[phase] = {"fp32": losses["fp32"], "bf16": losses["bf16"], "rel_diff": rel, "ok": rel <= 0.02}
            print(f"quality guard {phase}: val_loss fp32 {losses['fp32']:.5f} bf16 {losses['bf16']:.5f} "
                  f"({rel:.2%}, {'within' if rel <= 0.02 else 'OUTSIDE'} 2%)")
    return out


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    main()
