"""A requeued SLURM job continues its own phase runs (issue 28, item 5): in a continued job run
(``KRONOS_EXP_CONTINUE_JOB_RUN``, set by kronos_exp/slurm_jobs.py), a phase whose earlier attempt
stopped with a signed training state trains on in that same phase run, reopened, and counts its
attempts (tag ``slurm_attempts``): one phase run per phase, not a KILLED run per attempt. A state
that fails its checks is refused as before (a new phase run trains from the start), and outside a
continued job run a rerun resumes in a new phase run (``resumed_from``), as before.

Each stopped attempt is the real CLI in a subprocess, stopped by SIGTERM (what SLURM's warning
becomes in a job: kronos_exp/slurm_jobs.py) once it saved a new training state; the attempt that
finishes runs in this process (tests/harness.py Pipeline). All attempts share one run folder, as a
requeued job's do (tests/e2e/test_slurm.py checks that on a real SLURM). The claims between an
attempt and another run that found the same stopped phase run are checked on a store alone."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness import Cli, Pipeline
from kronos_exp.tracking.resume import Unfinished, take, take_back, taken_up
from kronos_exp.tracking.runs import CONTINUE_RUN_ENV


# About 0.35 s an epoch on one thread: a stopped attempt is stopped long before its last.
TINY = ["phases=tokenizer", "precision=fp32", "data.max_train_windows=64", "data.max_eval_windows=16",
        "tokenizer.batch_size=8", "checkpoint_every_steps=2", "tokenizer.epochs=30"]
BOTH = ["phases=both", "precision=fp32", "data.max_train_windows=64", "data.max_eval_windows=16",
        "tokenizer.batch_size=8", "predictor.batch_size=8", "checkpoint_every_steps=2", "tokenizer.epochs=1",
        "predictor.epochs=30"]


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _state(run_dir: Path, phase: str = "tokenizer") -> Path:
    return run_dir / "checkpoints" / f"{phase}.last.safetensors"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def stopped_attempt(cli: Cli, run_dir: Path, continued: str | None = None, overrides: list[str] = TINY,
                    phase: str = "tokenizer") -> None:
    """One attempt in a CLI process (continuing job run ``continued``), stopped by SIGTERM once it
    saved a training state of ``phase`` of its own."""
    before = _identity(_state(run_dir, phase))
    env = {**cli.env(), "OMP_NUM_THREADS": "1", **({CONTINUE_RUN_ENV: continued} if continued else {})}
    proc = subprocess.Popen(cli.command(*overrides, f"hydra.run.dir={run_dir}", fast=False), cwd=cli.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while _identity(_state(run_dir, phase)) in (None, before):
            assert proc.poll() is None and time.time() < deadline, "the attempt never saved a training state"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]


def finishing_attempt(cli: Cli, run_dir: Path, continued: str | None, monkeypatch) -> str:
    """The attempt that finishes, in this process; its output."""
    with monkeypatch.context() as env:
        if continued:
            env.setenv(CONTINUE_RUN_ENV, continued)
        outcome = Pipeline(cli.root).run(*TINY, f"hydra.run.dir={run_dir}", fast=False)
    return outcome.output


def jobs_and_phases(cli: Cli):
    runs = cli.runs()
    return ([r for r in runs if "phase" not in r.data.tags],
            [r for r in runs if r.data.tags.get("phase") == "tokenizer"])


@pytest.mark.e2e
@pytest.mark.slow
def test_each_attempt_of_a_requeued_job_continues_its_one_phase_run(cli, monkeypatch):
    run_dir = cli.root / "outputs" / "job0"
    stopped_attempt(cli, run_dir)
    [job], [phase] = jobs_and_phases(cli)
    assert (job.info.status, phase.info.status) == ("KILLED", "KILLED")
    stopped_attempt(cli, run_dir, continued=job.info.run_id)
    jobs, phases = jobs_and_phases(cli)
    assert [r.info.run_id for r in jobs + phases] == [job.info.run_id, phase.info.run_id]  # no new run
    assert phases[0].info.status == "KILLED" and phases[0].data.tags["slurm_attempts"] == "2"

    out = finishing_attempt(cli, run_dir, job.info.run_id, monkeypatch)
    assert f"tokenizer: continuing run {phase.info.run_id}" in out and "tokenizer: resuming from" in out
    [job], [phase] = jobs_and_phases(cli)
    assert (job.info.status, phase.info.status) == ("FINISHED", "FINISHED") and "stopped" not in job.data.tags
    assert phase.data.tags["mlflow.parentRunId"] == job.info.run_id
    assert phase.data.tags["slurm_attempts"] == "3"
    assert not {"stopped", "error", "resumed_from", "resumed_by", "state_refused"} & set(phase.data.tags)
    assert Path(phase.data.tags["last_state"]) == _state(run_dir).resolve() and not _state(run_dir).exists()
    [version] = cli.versions("kronos-tokenizer")
    assert version.run_id == phase.info.run_id
    steps = [m.step for m in cli.client().get_metric_history(phase.info.run_id, "train_loss")]
    assert steps == sorted(set(steps)) and len(steps) > 1  # one step counter across the attempts, no repeats


@pytest.mark.e2e
@pytest.mark.slow
def test_a_continued_job_whose_phase_state_is_refused_trains_it_afresh_in_a_new_phase_run(cli, monkeypatch):
    run_dir = cli.root / "outputs" / "job0"
    stopped_attempt(cli, run_dir)
    [job], [old] = jobs_and_phases(cli)
    _state(run_dir).write_bytes(_state(run_dir).read_bytes() + b"altered")  # this user's file, not what was signed

    out = finishing_attempt(cli, run_dir, job.info.run_id, monkeypatch)
    assert "not resuming run" in out and "tokenizer: resuming from" not in out
    [job_after], [old, new] = jobs_and_phases(cli)
    assert job_after.info.run_id == job.info.run_id and job_after.info.status == "FINISHED"
    assert old.info.status == "KILLED" and "state_refused" in old.data.tags
    assert old.data.tags["resumed_by"] == new.info.run_id
    assert new.info.status == "FINISHED" and "resumed_from" not in new.data.tags


@pytest.mark.e2e
@pytest.mark.slow
def test_outside_a_continued_job_a_rerun_resumes_a_continued_phase_run_in_a_new_one(cli, monkeypatch):
    """An ordinary rerun (not a requeued job) resumes as it always did, also from a phase run that
    an attempt continued: the claim on it is this attempt's, not the one before."""
    run_dir = cli.root / "outputs" / "job0"
    stopped_attempt(cli, run_dir)
    [job], [phase] = jobs_and_phases(cli)
    stopped_attempt(cli, run_dir, continued=job.info.run_id)

    out = finishing_attempt(cli, run_dir, None, monkeypatch)
    assert f"tokenizer: resuming run {phase.info.run_id}" in out
    [old_job, new_job], [old, new] = jobs_and_phases(cli)
    assert old.info.run_id == phase.info.run_id and old.data.tags["resumed_by"] == new.info.run_id
    assert old.info.status == "KILLED" and old.data.tags["slurm_attempts"] == "2"
    assert new.info.status == "FINISHED" and new.data.tags["resumed_from"] == old.info.run_id
    assert new.data.tags["mlflow.parentRunId"] == new_job.info.run_id != old_job.info.run_id


# -- the claims, on a store alone ------------------------------------------------------------------

def _job_with_phase(client: MlflowClient, experiment: str) -> tuple[str, str]:
    job = client.create_run(experiment).info.run_id
    phase = client.create_run(experiment, tags={"phase": "tokenizer", "mlflow.parentRunId": job}).info.run_id
    client.set_terminated(phase, "KILLED")
    return job, phase


def test_an_attempt_and_another_run_take_a_phase_run_once_each_time_it_stops(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("continue", artifact_location=(tmp_path / "a").as_uri())
    _, phase = _job_with_phase(client, experiment)
    other = client.create_run(experiment).info.run_id
    stopped_once = Unfinished(phase, "KILLED", tmp_path / "state", "fp")
    assert take_back(client, stopped_once)  # the second attempt continues it
    assert not take(client, stopped_once, other)  # another run that found it stopped, too late
    stopped_twice = Unfinished(phase, "KILLED", tmp_path / "state", "fp", attempts=2)
    assert take(client, stopped_twice, other)  # stopped again: a rerun may take it
    assert not take_back(client, stopped_twice)
    assert client.get_run(phase).data.tags["resumed_by"] == other


def test_a_phase_resumed_in_its_own_job_leaves_that_job_running(tmp_path):
    """Resuming a phase run of the job it runs in (a requeued job whose phase run could not be
    continued) does not mark that job taken over: the next invocation would end it FAILED."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("continue", artifact_location=(tmp_path / "a").as_uri())
    job, phase = _job_with_phase(client, experiment)
    same_job = client.create_run(experiment, tags={"phase": "tokenizer", "mlflow.parentRunId": job}).info.run_id
    taken_up(client, Unfinished(phase, "KILLED", tmp_path / "state", "fp"), same_job)
    assert "resumed_by" not in client.get_run(job).data.tags
    elsewhere = client.create_run(experiment, tags={"mlflow.parentRunId": client.create_run(experiment).info.run_id})
    taken_up(client, Unfinished(phase, "KILLED", tmp_path / "state", "fp"), elsewhere.info.run_id)
    assert client.get_run(job).data.tags["resumed_by"] == elsewhere.info.run_id



@pytest.mark.e2e
@pytest.mark.slow
def test_a_phase_an_earlier_attempt_finished_opens_no_run_in_a_later_attempt(cli, monkeypatch):
    """Stopped during its predictor, the job's next attempt takes the tokenizer its first attempt
    trained from the registry without a tokenizer run of its own: one run per phase in the job."""
    run_dir = cli.root / "outputs" / "job0"
    stopped_attempt(cli, run_dir, overrides=BOTH, phase="predictor")
    [job] = [r for r in cli.runs() if "phase" not in r.data.tags]

    with monkeypatch.context() as patched:
        patched.setenv(CONTINUE_RUN_ENV, job.info.run_id)
        out = Pipeline(cli.root).run(*BOTH, f"hydra.run.dir={run_dir}", fast=False).output
    assert "tokenizer: finished by an earlier attempt of this job; using kronos-tokenizer v1" in out
    runs = cli.runs()
    assert sorted(r.data.tags.get("phase", "job") for r in runs) == ["job", "predictor", "tokenizer"]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.data.tags.get("phase"), r.info.status) for r in runs]
    assert len(cli.versions("kronos-tokenizer")) == 1
