"""Invocations that run at the same moment on one machine never mix their files or their runs."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A real CLI process, held after its imports until the test says go, so that two of them enter
# Hydra (which names the run folder) within the same millisecond.
_HELD_CLI = """
import os, runpy, sys, time
import hydra, mlflow, torch  # the slow imports, before the start line
ready, go = sys.argv.pop(1), sys.argv.pop(1)
open(ready, "w").close()
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


def test_same_second_invocations_register_their_own_checkpoints(cli, tmp_path, monkeypatch):
    go = tmp_path / "go"
    cli.client().search_experiments()  # an initialised store: this test is about the run folders
    lrs = ["0.001", "0.0005"]
    ready = [tmp_path / f"ready-{lr}" for lr in lrs]
    procs = [subprocess.Popen([sys.executable, "-c", _HELD_CLI, str(flag), str(go),
                               *cli.command(*TOKENIZER_ONLY, f"tokenizer.lr={lr}", fast=False)[3:]],
                              cwd=cli.root, env=_env(cli), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for lr, flag in zip(lrs, ready)]
    while not all(flag.exists() for flag in ready):  # both are past their imports
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        time.sleep(0.05)
    time.sleep(1.05 - time.time() % 1)  # early in a second: both name their folder within it
    go.touch()
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    run_dirs = sorted(p for p in (cli.root / "outputs" / "runs").glob("*/*") if p.is_dir())
    assert len(run_dirs) == 2, run_dirs  # one folder per invocation
    together = {lr: _registered_sha(cli, lr) for lr in lrs}
    # The same settings alone, in a fresh store (run in this process, on one thread as the two were): the
    # checkpoint each invocation should have registered.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for lr in lrs:
        solo = Pipeline(tmp_path / f"solo-{lr}")
        solo.root.mkdir()
        solo.run(*TOKENIZER_ONLY, f"tokenizer.lr={lr}", fast=False)
        assert together[lr] == _registered_sha(solo, lr), lr
    assert together[lrs[0]] != together[lrs[1]]


# Two real CLI processes that each run the same command once per round, both released by one file
# within a millisecond of each other; each round has its own seed, hence its own fingerprint.
_ROUNDS_CLI = """
import os, runpy, sys, time
import hydra, mlflow, torch, kronos_exp.pipeline  # the slow imports, once per process
root, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
overrides = sys.argv[4:]
for r in range(rounds):
    while not os.path.exists(os.path.join(root, f"go-{r}")):
        time.sleep(0.001)
    sys.argv = ["kronos_exp", *overrides, f"seed={r}", f"hydra.run.dir={root}/runs/{name}-{r}"]
    try:
        runpy.run_module("kronos_exp", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code:
            raise
    open(os.path.join(root, f"done-{name}-{r}"), "w").close()
"""
ROUNDS = 10


def test_two_invocations_started_together_train_a_fingerprint_once(cli, tmp_path):
    cli.client().search_experiments()  # an initialised store: this test is about the claims
    procs = [subprocess.Popen([sys.executable, "-c", _ROUNDS_CLI, str(tmp_path), name, str(ROUNDS),
                               *cli.command(*TOKENIZER_ONLY, "skip_existing=true", fast=False)[3:]],
                              cwd=cli.root, env=_env(cli), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("a", "b")]
    try:
        for r in range(ROUNDS):
            (tmp_path / f"go-{r}").touch()
            deadline = time.time() + 120
            while not all((tmp_path / f"done-{n}-{r}").exists() for n in "ab"):
                # A process that finished its last round exits 0 while the other still works on it.
                assert time.time() < deadline and all(p.poll() in (None, 0) for p in procs), \
                    [p.communicate()[0][-3000:] for p in procs if p.poll()]
                time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
    phase_runs = [r for r in cli.runs() if r.data.tags.get("phase") == "tokenizer"]
    assert len(phase_runs) == 2 * ROUNDS and {r.info.status for r in phase_runs} == {"FINISHED"}
    by_fingerprint: dict[str, list[str]] = {}
    for run in phase_runs:
        by_fingerprint.setdefault(run.data.tags["fingerprint"], []).append(run.data.tags["skipped"])
    assert len(by_fingerprint) == ROUNDS
    # Each round: one process trained, the other waited for it and reused its version.
    assert all(sorted(skipped) == ["false", "true"] for skipped in by_fingerprint.values()), by_fingerprint
    assert len(cli.versions("kronos-tokenizer")) == ROUNDS
