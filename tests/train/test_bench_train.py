"""benchmarks/bench_train.py runs end to end on tiny presets and imports neither MLflow nor Hydra
(it must run on a bare GPU image)."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import runpy, sys
sys.argv = ["bench_train.py", *sys.argv[1:]]
runpy.run_path("benchmarks/bench_train.py", run_name="__main__")
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("mlflow", "hydra", "omegaconf")})
assert not heavy, heavy
"""


def test_bench_train_smoke(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--tokenizer", "tiny", "--arch", "tiny", "--lookback", "12", "--predict", "4", "--batch", "8",
            "--train-rows", "80", "--val-rows", "40", "--steps", "1", "--warmup", "1", "--threads", "1",
            "--precision", "fp32", "bf16", "--json", str(out)]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(r["phase"], r["precision"]) for r in result["rows"]} == {
        (p, q) for p in ("tokenizer", "predictor") for q in ("fp32", "bf16")}
    for row in result["rows"]:
        assert row["bare_samples_s"] > 0 and row["loop_samples_s"] > 0 and row["peak_rss_gb"] > 0
        assert row["shape_tflops"] > 0 and row["gemm_ms"] > 0 and row["gemm_calls"] >= row["gemm_shapes"] > 0
        assert row["mfu_shapes"] > 0
        assert row["traffic_mb"] > 0 and row["bandwidth_gbs"] > 0 and 0 < row["unfused_bound"] < 1
        # On a CPU in bf16 attention is two matmuls, replayed with the others; else a fused kernel (the
        # predictor's frozen tokenizer encodes in fp32, so its step keeps some).
        if (row["phase"], row["precision"]) == ("tokenizer", "bf16"):
            assert row["sdpa_flop_share"] == 0
        else:
            assert 0 < row["sdpa_flop_share"] < 1
        profile = row["profile_ms"]
        assert set(profile) == {"matmul", "attention", "norms", "elementwise", "quantizer", "optimizer", "casts",
                                "other"}
        assert all(v >= 0 for v in profile.values())
        for category in ("matmul", "attention", "norms", "quantizer", "optimizer"):
            assert profile[category] > 0, category
        assert profile["other"] < 0.5 * sum(profile.values())
        assert 0.2 < sum(profile.values()) / (row["fwd_bwd_ms"] + row["optimizer_ms"]) < 5  # the step, profiled
    assert "matmul rate at the model's own shapes" in proc.stdout
    assert "profile predictor bf16" in proc.stdout
    assert "memory traffic outside the matmuls" in proc.stdout
    assert set(result["guard"]) == {"tokenizer", "predictor"}
    assert "quality guard predictor" in proc.stdout


def test_step_ops_count_the_bytes_each_op_outside_the_matmuls_moves():
    step_ops = runpy.run_path(str(ROOT / "benchmarks" / "bench_train.py"))["StepOps"]
    a, b = torch.ones(1000), torch.ones(1000)  # 4,000 bytes each
    with step_ops() as ops:
        a + b  # reads two, writes one
    assert ops.traffic == 12_000
    with step_ops() as ops:
        a.add_(b)  # reads both, writes a
    assert ops.traffic == 12_000
    with step_ops() as ops:
        a.view(10, 100).t()[2:]  # views move nothing
    assert ops.traffic == 0
    with step_ops() as ops:
        a * torch.full((1,), 2.0).expand(1000)  # a broadcast is read once (the 4-byte fill writes 4 more)
    assert ops.traffic == 4 + 4_000 + 4 + 4_000
    with step_ops() as ops:
        torch.ones(8, 16) @ torch.ones(16, 4)  # matmuls are counted as calls (the fills are traffic)
    assert len(ops.calls) == 1 and ops.traffic == 4 * (8 * 16 + 16 * 4)
