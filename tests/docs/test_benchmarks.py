"""The benchmarks docs/speed.md shows that no other test runs (bench_config_p.py, bench_dataset.py,
busy_machine.py) run end to end at a small size and print the table the page shows: its header, its
steps."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import page

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _shown(command: str) -> list[str]:
    """The output lines the page shows under ``$ <command>``, up to the next command or the block's end."""
    text = page("speed")
    start = text.index(f"$ {command}\n") + len(command) + 3
    block = text[start:text.index("```", start)]
    return block.split("\n$ ")[0].splitlines()


def _run(script: str, *args: str, cwd: Path) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_bench_dataset_prints_the_pages_table(tmp_path):
    shown = _shown("python benchmarks/bench_dataset.py --rows 1000000")
    printed = _run("bench_dataset.py", "--rows", "20000", "--symbols", "10", "--samples", "100", "--batches", "10",
                   cwd=tmp_path)
    assert re.match(r"20,000 rows, 10 series; CSV .* one process per step$", printed[0]), printed[0]
    assert printed[1] == shown[1]  # the header
    steps = [line[:20].strip() for line in printed[2:]]
    assert steps == [line[:20].strip() for line in shown[2:]]


def test_bench_config_p_prints_the_pages_table(tmp_path):
    shown = _shown("python benchmarks/bench_config_p.py --precision auto auto auto")
    printed = _run("bench_config_p.py", "--precision", "fp32", "--extra", "data.max_train_windows=32",
                   "data.max_eval_windows=8", cwd=tmp_path)
    assert printed[0] == shown[0]  # the header
    assert printed[1].split()[0] == "fp32" and len(printed[1].split()) == len(shown[1].split())
    assert printed[-1] == shown[-1]  # what "outside s" means


def test_busy_machine_prints_the_pages_table(tmp_path):
    """Its quiet case alone, at the smoke size: the busy cases load the machine on purpose, which
    the tests running beside this one would feel."""
    shown = _shown("python benchmarks/busy_machine.py --cases quiet-auto busy-auto")
    printed = _run("busy_machine.py", "--fast", "--cases", "quiet-auto", cwd=tmp_path)
    header = next(i for i, line in enumerate(shown) if line.startswith("case "))
    assert printed[0].startswith("# ") and "cores; torch" in printed[0]
    assert shown[header] in printed
    row = printed[printed.index(shown[header]) + 1].split()
    assert row[0] == "quiet-auto" and float(row[2]) > 0 and row[3] == "1.00"
