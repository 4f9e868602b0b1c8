"""benchmarks/bench_generate.py (the command docs/speed.md shows, with a short context) runs end to end, finds
the package from a checkout, and reports cached and recomputed forecasts as identical."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_generate_smoke():
    proc = subprocess.run([sys.executable, "benchmarks/bench_generate.py", "--context", "16", "--max-context", "40",
                           "--repeats", "1", "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["32"], ["120"])]
    assert [(r[0], r[1]) for r in rows] == [("32", "1"), ("120", "1"), ("32", "8")]
    assert all(r[-1] == "yes" for r in rows), proc.stdout
