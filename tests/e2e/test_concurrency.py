"""Invocations that run at the same moment on one machine never mix their files or their runs."""
from __future__ import annotations

import subprocess
import sys
import time

# A real CLI process, held after its imports until the test says go, so that two of them enter
# Hydra (which names the run folder) within the same millisecond.
_HELD_CLI = """
import os, runpy, sys, time
import hydra, mlflow, torch  # the slow imports, before the start line
go = sys.argv.pop(1)
while not os.path.exists(go):
    time.sleep(0.001)
sys.argv[0] = "kronos_exp"
runpy.run_module("kronos_exp", run_name="__main__", alter_sys=True)
"""

TOKENIZER_ONLY = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]


def _env(cli):
    return {**cli.env(), "OMP_NUM_THREADS": "1"}


def _registered_sha(cli, lr: str) -> list[str]:
    return [v.tags["sha256"] for v in cli.versions("kronos-tokenizer")
            if cli.client().get_run(v.run_id).data.params.get("tokenizer.lr") == lr]


def test_same_second_invocations_register_their_own_checkpoints(cli, tmp_path):
    go = tmp_path / "go"
    cli.client().search_experiments()  # an initialised store: this test is about the run folders
    lrs = ["0.001", "0.0005"]
    procs = [subprocess.Popen([sys.executable, "-c", _HELD_CLI, str(go),
                               *cli.command(*TOKENIZER_ONLY, f"tokenizer.lr={lr}", fast=False)[3:]],
                              cwd=cli.root, env=_env(cli), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for lr in lrs]
    time.sleep(15)  # both are past their imports
    time.sleep(1.05 - time.time() % 1)  # early in a second: both name their folder within it
    go.touch()
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    run_dirs = sorted(p for p in (cli.root / "outputs" / "runs").glob("*/*") if p.is_dir())
    assert len(run_dirs) == 2, run_dirs  # one folder per invocation
    together = {lr: _registered_sha(cli, lr) for lr in lrs}
    # The same settings alone, in a fresh store: the checkpoint each invocation should have registered.
    for lr in lrs:
        solo = type(cli)(tmp_path / f"solo-{lr}")
        solo.root.mkdir()
        proc = subprocess.run(solo.command(*TOKENIZER_ONLY, f"tokenizer.lr={lr}", fast=False), cwd=solo.root,
                              env=_env(solo), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert together[lr] == _registered_sha(solo, lr), lr
    assert together[lrs[0]] != together[lrs[1]]
