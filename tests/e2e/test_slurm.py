"""Sweeps through ``hydra/launcher=slurm`` on a real single-node SLURM (the ``slurm`` fixture,
tests/e2e/slurm_cluster.py): jobs run at the threads SLURM grants, and a job that reaches its time
limit saves its state, requeues itself, resumes and finishes (issue 20, item 8); a job cancelled
with ``scancel`` ends the sweep with one line, not a traceback (issue 27, item 9).

SLURM without accounting (no slurmdbd), as on many small clusters: job states come from squeue.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.slow]

# The node has 2 CPUs and 1 GB per job is plenty for these tiny runs.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
TINY = ["phases=tokenizer", "data.max_train_windows=128", "data.max_eval_windows=32"]


def _env(cli, slurm) -> dict[str, str]:
    """No OMP_NUM_THREADS (a pytest-xdist worker sets 1): the jobs pick the threads SLURM grants."""
    env = {k: v for k, v in cli.env().items() if k != "OMP_NUM_THREADS"}
    return {**env, "SLURM_CONF": str(slurm.conf)}


def _sweep(cli, slurm, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli.command("-m", *SLURM, *TINY, *overrides, fast=False), cwd=cli.root,
                          env=_env(cli, slurm), capture_output=True, text=True, timeout=timeout)


def _job_logs(cli) -> str:
    """What the SLURM jobs wrote (submitit's log files in the sweep folder)."""
    return "\n".join(p.read_text() for p in sorted(Path(cli.root, "outputs").rglob(".submitit/*/*_log.out")))


def _assert_polls_quietly(out: str) -> None:
    """No sacct warning on every status poll: said once, then squeue answers."""
    assert "Bypassing sacct error" not in out
    assert out.count("SLURM keeps no job accounting here") == 1, out[-3000:]


def _assert_clean(proc) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-6000:]}"
    assert "Traceback" not in out, out[-6000:]
    _assert_polls_quietly(out)


@pytest.mark.timeout(720)  # up to 300 s for job 1 to start, 300 s for the sweep to end
def test_jobs_run_at_the_threads_slurm_grants_and_one_not_requeued_says_how_to_resume(cli, slurm):
    """A 2-job sweep with cpus_per_task=1: each job trains at one thread. Job 1 (a long one) then
    gets SLURM's time-limit warning with no requeue left (max_num_timeout=0; sent here by
    ``scancel --signal``, as SLURM sends it): it stops with its state saved, and the sweep ends
    with one line on how to resume, not a traceback."""
    # timeout_min=5: submitit takes the signal for the time limit's (not a preemption's) in a job
    # under 10 minutes, whenever it comes.
    command = cli.command("-m", *SLURM, *TINY, "tokenizer.epochs=1,200", "hydra.launcher.timeout_min=5",
                          "hydra.launcher.max_num_timeout=0", fast=False)
    with open(cli.root / "sweep.log", "w+") as log:
        sweep = subprocess.Popen(command, cwd=cli.root, env=_env(cli, slurm), stdout=log, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            deadline = time.time() + 300
            while not any(line.startswith("[job 1]") for line in _banner_lines(cli)) and time.time() < deadline:
                time.sleep(1)
            (array,) = {p.name.split("_")[0] for p in Path(cli.root, "outputs").rglob(".submitit/*_1")}
            subprocess.run(["scancel", "--signal=USR2", f"{array}_1"], env=_env(cli, slurm), check=True)
            assert sweep.wait(timeout=300) == 1
        finally:
            sweep.kill()
        log.seek(0)
        out = log.read()
    assert "Traceback" not in out, out[-6000:]
    _assert_polls_quietly(out)
    assert _banner_lines(cli) == ["[job 0]  threads  1 (granted by SLURM, SLURM_CPUS_PER_TASK=1)",
                                  "[job 1]  threads  1 (granted by SLURM, SLURM_CPUS_PER_TASK=1)"]
    jobs = {r.data.tags["job_num"]: r for r in cli.runs() if "job_num" in r.data.tags}
    assert {n: (r.info.status, r.data.tags["threads"]) for n, r in jobs.items()} == {
        "0": ("FINISHED", "1"), "1": ("KILLED", "1")}
    assert ("job 1: stopped by SLURM and not requeued (timed-out too many times; hydra.launcher.max_num_timeout=0); "
            "run the same command again to resume it from its last training state") in out
    assert "error: 1 of 2 sweep jobs did not finish" in out


def _banner_lines(cli) -> list[str]:
    """The banner's thread line of each job that has started, labelled by job."""
    lines = []
    for path in sorted(Path(cli.root, "outputs").rglob(".submitit/*/*_log.out")):
        text = path.read_text()
        label = "[job 1]" if path.name.split("_")[1] == "1" else "[job 0]"
        lines += [f"{label}  {line.strip()}" for line in text.splitlines() if line.startswith("  threads  ")]
    return sorted(lines)


@pytest.mark.timeout(960)  # the sweep may take its 900 s: a few attempts, each requeue held ~2 minutes
def test_a_job_at_its_time_limit_is_requeued_resumes_and_finishes(cli, slurm):
    """timeout_min=1 on a run of more than a minute: SLURM's warning (signal_delay_s before the
    limit) stops it at a step with its state saved, the job requeues itself and resumes: each
    attempt continues the job's one MLflow run and its one phase run, from that phase run's own
    state in the job's folder, each counting its attempts (tag ``slurm_attempts``; issue 28, item 5).

    SLURM checks time limits every 30 s, so the warning comes 20-50 s into each attempt, and an
    attempt trains for about 10-40 s: 150 epochs (about 65 s on a quiet machine, where 60 once
    finished in 26 s, before any warning; more on a busy one) outlast the first attempt and may need
    a few more; max_num_timeout=6 leaves room for a slow machine (the preset's 3 is checked in
    tests/test_launchers.py)."""
    proc = _sweep(cli, slurm, "tokenizer.epochs=150", "hydra.launcher.timeout_min=1",
                  "hydra.launcher.signal_delay_s=10", "hydra.launcher.max_num_timeout=6", timeout=900)
    _assert_clean(proc)
    runs = cli.runs()
    logs = _job_logs(cli)
    assert "Requeued job" in logs, "the job was never stopped by its time limit"
    assert "tokenizer: resuming from" in logs
    # One job run for the sweep's job and one phase run, each continued by every attempt (issue 28, item 5).
    (job,) = [r for r in runs if r.data.tags.get("job_num") == "0"]
    (phase,) = [r for r in runs if r.data.tags.get("phase") == "tokenizer"]
    attempts = int(job.data.tags["slurm_attempts"])
    continuing = [line for line in logs.splitlines() if f"tokenizer: continuing run {phase.info.run_id}" in line]
    assert attempts >= 2 and len(continuing) == attempts - 1, logs[-6000:]
    assert (job.info.status, phase.info.status) == ("FINISHED", "FINISHED")
    assert phase.data.tags["mlflow.parentRunId"] == job.info.run_id
    assert phase.data.tags["slurm_attempts"] == str(attempts)  # it trained in every attempt
    assert "stopped" not in job.data.tags and "stopped" not in phase.data.tags  # why an attempt ended KILLED
    assert not {"resumed_from", "resumed_by", "state_refused"} & set(phase.data.tags)
    # Each attempt went on from the state in the job's folder, which they all share; gone once registered.
    state = phase.data.tags["last_state"]
    assert all(line.endswith(f" from {state}") for line in continuing), continuing
    assert not Path(state).exists()
    [version] = cli.versions("kronos-tokenizer")
    assert version.run_id == phase.info.run_id
    # One row for the job in the sweep's table: its last attempt, finished.
    assert "1 jobs, best first" in proc.stdout + proc.stderr
    assert [line.split()[3] for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("0 ")] == [
        "FINISHED"]


@pytest.mark.timeout(300)
def test_a_job_cancelled_with_scancel_ends_the_sweep_with_one_line(cli, slurm):
    """``scancel`` of a running job: the sweep says so in one line naming the job, ends non-zero
    without submitit's UncompletedJobError traceback, and the job's run is not left RUNNING."""
    command = cli.command("-m", *SLURM, *TINY, "tokenizer.epochs=500", fast=False)
    with open(cli.root / "sweep.log", "w+") as log:
        sweep = subprocess.Popen(command, cwd=cli.root, env=_env(cli, slurm), stdout=log, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            deadline = time.time() + 120
            while "tokenizer: training" not in _job_logs(cli) and time.time() < deadline:
                time.sleep(0.5)
            # submitit's log of task 0: <SLURM job id>_0_log.out
            (job_id,) = {p.name.rsplit("_", 2)[0] for p in Path(cli.root, "outputs").rglob(".submitit/*/*_0_log.out")}
            subprocess.run(["scancel", job_id], env=_env(cli, slurm), check=True)
            returncode = sweep.wait(timeout=120)
        finally:
            sweep.kill()
        log.seek(0)
        out = log.read()
    assert returncode == 1, out[-6000:]
    assert "Traceback" not in out and "UncompletedJobError" not in out, out[-6000:]
    assert f"job 0: cancelled in SLURM (job {job_id}, state CANCELLED" in out, out[-6000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: 1 of 1 sweep jobs did not finish (jobs 0); their errors are printed above"], out[-6000:]
    (job,) = [r for r in cli.runs() if r.data.tags.get("job_num") == "0"]
    assert job.info.status in ("KILLED", "FAILED")
