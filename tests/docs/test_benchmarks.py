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
    steps = [re.split(r"\s{2,}", line)[0] for line in printed[2:]]
    assert steps == [re.split(r"\s{2,}", line)[0] for line in shown[2:]]


def test_bench_config_p_prints_the_pages_table(tmp_path):
    shown = _shown("python benchmarks/bench_config_p.py --reference ../Kronos --precision fp32 auto auto")
    printed = _run("bench_config_p.py", "--precision", "fp32", "--extra", "data.max_train_windows=32",
                   "data.max_eval_windows=8", cwd=tmp_path)
    assert printed[0].startswith("# ") and printed[0].endswith(" cores")  # the CPU and its features
    header = next(line for line in shown if line.startswith("precision"))
    assert printed[1] == header
    assert printed[2].split()[0] == "fp32" and len(printed[2].split()) == len(shown[shown.index(header) + 1].split())
    assert printed[2].split()[-1] == "-"  # no reference given: no fraction of it
    assert printed[-1] == shown[-1]  # what "outside s" and "of ref" mean


FAKE_REFERENCE = """
import json, os, sys, time, yaml
time.sleep(2)  # long enough for a fraction of it to be read off the table
config = yaml.safe_load(open(sys.argv[sys.argv.index("--config") + 1]))
config["archs"] = {key: json.load(open(os.path.join(config["model_paths"][key], "config.json")))
                   for key in ("pretrained_tokenizer", "pretrained_predictor")}
open("seen.yaml", "w").write(yaml.safe_dump(config))
"""


def test_bench_config_p_runs_the_reference_scripts_at_config_p_and_reports_the_fraction(tmp_path):
    """The reference side, with a stand-in for finetune_csv/train_sequential.py (the reference
    repository is not here): it is run from its folder with the config P settings, and each case
    is reported as a fraction of its wall time."""
    reference = tmp_path / "Kronos"
    (reference / "finetune_csv").mkdir(parents=True)
    (reference / "finetune_csv" / "train_sequential.py").write_text(FAKE_REFERENCE)
    printed = _run("bench_config_p.py", "--reference", str(reference), "--precision", "fp32", "--extra",
                   "data.max_train_windows=32", "data.max_eval_windows=8", cwd=tmp_path)
    assert re.match(r"reference scripts: [0-9.]+ s wall, [0-9.]+ s CPU$", printed[1]), printed[1]
    row = printed[3].split()
    reference_s = float(printed[1].split()[2])
    assert row[0] == "fp32" and float(row[-1]) == pytest.approx(float(row[1]) / reference_s, rel=0.05)  # rounded
    import yaml
    seen = yaml.safe_load((reference / "finetune_csv" / "seen.yaml").read_text())
    assert seen["data"]["lookback_window"] == 64 and seen["data"]["predict_window"] == 8
    assert (seen["data"]["train_ratio"], seen["data"]["val_ratio"]) == (0.64, 0.16)
    assert seen["training"]["batch_size"] == 16
    assert seen["training"]["tokenizer_epochs"] == seen["training"]["basemodel_epochs"] == 1
    assert seen["experiment"]["pre_trained"] is False and seen["device"]["use_cuda"] is False
    tokenizer, predictor = seen["archs"]["pretrained_tokenizer"], seen["archs"]["pretrained_predictor"]
    assert (tokenizer["d_model"], tokenizer["n_enc_layers"], tokenizer["n_dec_layers"]) == (256, 4, 4)  # Tokenizer-base
    assert (predictor["d_model"], predictor["n_layers"], predictor["ff_dim"]) == (256, 4, 512)  # Kronos-mini


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
