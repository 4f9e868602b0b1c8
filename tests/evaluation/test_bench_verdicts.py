"""benchmarks/bench_verdicts.py (the command docs/evaluation.md shows, with few replications) runs end to end and
prints a rate for every cell; with a handful of replications it cannot measure a size, only run."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_verdicts_smoke():
    proc = subprocess.run([sys.executable, "benchmarks/bench_verdicts.py", "--replications", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "false-verdict rate at a nominal 5%, 20 replications per cell"
    assert any(line.startswith("10 x 3") and line.endswith("%") for line in lines)
    assert any("too few" in line for line in lines) and "32 dates, lag 3:" in proc.stdout
