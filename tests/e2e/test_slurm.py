"""Sweeps through ``hydra/launcher=slurm`` on a real single-node SLURM (the ``slurm`` fixture,
tests/e2e/slurm_cluster.py): jobs run at the threads SLURM grants, and a job that reaches its time
limit saves its state, requeues itself, resumes and finishes (issue 20, item 8).

SLURM without accounting (no slurmdbd), as on many small clusters: job states come from squeue.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

# The node has 2 CPUs and 1 GB per job is plenty for these tiny runs.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
TINY = ["phases=tokenizer", "data.max_train_windows=128", "data.max_eval_windows=32"]


def _sweep(cli, slurm, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**cli.env(), "SLURM_CONF": str(slurm.conf)}
    proc = subprocess.run(cli.command("-m", *SLURM, *TINY, *overrides, fast=False), cwd=cli.root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def _job_logs(cli) -> str:
    """What the SLURM jobs wrote (submitit's log files in the sweep folder)."""
    return "\n".join(p.read_text() for p in sorted(Path(cli.root, "outputs").rglob(".submitit/*/*_log.out")))


def _assert_clean(proc) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-6000:]}"
    assert "Traceback" not in out, out[-6000:]
    # No sacct warning on every status poll: said once, then squeue answers.
    assert "Bypassing sacct error" not in out
    assert out.count("SLURM keeps no job accounting here") == 1, out[-3000:]


def test_each_job_runs_at_the_threads_slurm_grants(cli, slurm):
    proc = _sweep(cli, slurm, "tokenizer.epochs=1", "tokenizer.lr=1e-3,2e-3")
    _assert_clean(proc)
    jobs = [r for r in cli.runs() if "job_num" in r.data.tags]
    assert sorted(r.data.tags["job_num"] for r in jobs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["threads"] == "1" for r in jobs)
    assert _job_logs(cli).count("threads  1 (granted by SLURM, SLURM_CPUS_PER_TASK=1)") == 2


def test_a_job_at_its_time_limit_is_requeued_resumes_and_finishes(cli, slurm):
    """timeout_min=1 on a run of about a minute's training: SLURM's warning (signal_delay_s before
    the limit) stops it at a step with its state saved, the job requeues itself and resumes."""
    proc = _sweep(cli, slurm, "tokenizer.epochs=30", "hydra.launcher.timeout_min=1",
                  "hydra.launcher.signal_delay_s=10")
    _assert_clean(proc)
    runs = cli.runs()
    phase_runs = [r for r in runs if r.data.tags.get("phase") == "tokenizer"]
    assert len(phase_runs) >= 2, "the job was never stopped by its time limit"
    *stopped, last = phase_runs  # oldest first
    assert all(r.info.status == "KILLED" for r in stopped) and last.info.status == "FINISHED"
    # Each attempt resumed the one before it.
    for before, after in zip(stopped, phase_runs[1:]):
        assert after.data.tags["resumed_from"] == before.info.run_id
    logs = _job_logs(cli)
    assert "Requeued job" in logs and "tokenizer: resuming from" in logs
    # One row for the job in the sweep's table: its last attempt, finished.
    assert "1 jobs, best first" in proc.stdout + proc.stderr
    assert [line.split()[3] for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("0 ")] == [
        "FINISHED"]

