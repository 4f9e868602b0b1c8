"""Two jobs that share only an `mlflow server` (different folders, different HOME: no lock file in
common; one user, so one key in a shared config folder, as on a cluster's shared home) train a
fingerprint once: one trains, the other waits and reuses; and when the one training is killed
outright, the other takes its claim over and resumes its training state. A run planted on that
server to point a resume at files of the attacker's is refused: nothing of theirs is run, used,
read through a link, or deleted."""
from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness import Outcome, Pipeline
from kronos_exp.tracking.stale import PID_TAG
from planted_pickle import planted_pickle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAME_JOB = ["phases=both", "skip_existing=true", "mlflow.heartbeat_s=1", "checkpoint_every_steps=1",
            "data.max_train_windows=64", "data.max_eval_windows=32", "tokenizer.epochs=2", "predictor.epochs=3",
            "tokenizer.batch_size=8", "predictor.batch_size=8"]


def host(root: Path, url: str, env: dict[str, str]) -> subprocess.Popen:
    root.mkdir()
    command = [sys.executable, "-m", "kronos_exp", *SAME_JOB, f"mlflow.tracking_uri={url}"]
    return subprocess.Popen(command, cwd=root, env={**env, "HOME": str(root), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def phase_runs(client: MlflowClient, phase: str):
    exp = client.get_experiment_by_name("kronos_exp")
    return [] if exp is None else client.search_runs([exp.experiment_id], f"tags.phase = '{phase}'")


def test_two_hosts_train_once_and_take_over_a_killed_claim(cli, serve, tmp_path):
    url = serve(["server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                 "--artifacts-destination", str(tmp_path / "artifacts")], cwd=tmp_path, env=cli.env())
    client = MlflowClient(url)
    procs = {name: host(tmp_path / name, url, cli.env()) for name in ("a", "b")}
    try:
        # Kill whichever host trains the predictor as soon as it has saved a training state.
        deadline = time.time() + 400
        while True:
            assert time.time() < deadline, "no predictor training state appeared"
            training = [r for r in phase_runs(client, "predictor")
                        if r.data.tags.get("last_state") and Path(r.data.tags["last_state"]).is_file()]
            if training:
                break
            assert all(p.poll() is None for p in procs.values()), {n: p.stdout.read()[-3000:] for n, p in procs.items()}
            time.sleep(0.1)
        victim = training[0]
        killed = next(n for n, p in procs.items() if str(p.pid) == victim.data.tags[PID_TAG])
        procs[killed].send_signal(signal.SIGKILL)
        survivor = "b" if killed == "a" else "a"
        out = procs[survivor].communicate(timeout=400)[0]
        assert procs[survivor].returncode == 0, out[-4000:]
    finally:
        for p in procs.values():
            p.kill()
            p.wait()

    # The tokenizer was trained by one host and reused by the other, which waited for it.
    assert "another job is producing fingerprint" in out
    tokenizer_runs = phase_runs(client, "tokenizer")
    assert sorted(r.data.tags["skipped"] for r in tokenizer_runs) == ["false", "true"]
    assert len(client.search_model_versions("name = 'kronos-tokenizer'")) == 1
    # The predictor claim of the killed host went stale; the survivor took it over from its state.
    mine = next(r for r in phase_runs(client, "predictor") if r.info.run_id != victim.info.run_id)
    assert mine.info.status == "FINISHED" and mine.data.tags["resumed_from"] == victim.info.run_id
    assert client.get_run(victim.info.run_id).info.status == "FAILED"
    assert len(client.search_model_versions("name = 'kronos-predictor'")) == 1


TOKENIZER_ONLY = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16"]


def test_a_planted_resume_tag_on_a_shared_server_runs_nothing_and_writes_nothing_outside(cli, serve, tmp_path,
                                                                                        monkeypatch):
    """Anyone who can write to the server can create a KILLED run with a victim's fingerprint and a
    ``last_state`` tag (and its digest) pointing at a pickle of theirs."""
    url = serve(["server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                 "--artifacts-destination", str(tmp_path / "artifacts")], cwd=tmp_path, env=cli.env())
    victim, evil, marker = tmp_path / "victim", tmp_path / "evil", tmp_path / "pwned"
    victim.mkdir()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def normal_command() -> Outcome:
        """The victim's ``python -m kronos_exp <TOKENIZER_ONLY> mlflow.tracking_uri=<url>``, in this process."""
        return Pipeline(victim).run(*TOKENIZER_ONLY, fast=False, check=False, tracking_uri=url)

    assert normal_command().returncode == 0
    client = MlflowClient(url)
    [done] = phase_runs(client, "tokenizer")

    def plant(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(planted_pickle(marker))
        run = client.create_run(done.info.experiment_id, tags={
            "fingerprint": done.data.tags["fingerprint"], "phase": "tokenizer", "last_state": str(path),
            "last_state_hmac": hashlib.sha256(path.read_bytes()).hexdigest()}).info.run_id
        client.set_terminated(run, "KILLED")
        return run

    elsewhere, other_name = evil / "state.pt", evil / "checkpoints" / "tokenizer.last.pt"
    in_place = evil / "checkpoints" / "tokenizer.last.safetensors"  # where a phase run keeps its state
    attacks = {plant(elsewhere): f"its last_state tag points at {elsewhere}, not at a run folder's "
                                 "checkpoints/tokenizer.last.safetensors",
               plant(other_name): f"its last_state tag points at {other_name}",
               plant(in_place): f"{in_place} is not a training state this user's runs signed"}
    planted = sorted(evil.rglob("*"))
    proc = normal_command()
    assert not marker.exists()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for run, why in attacks.items():
        [line] = [line for line in out.splitlines() if f"not resuming run {run}" in line]
        assert why in line
        assert client.get_run(run).data.params["resumed_by"]  # taken: never offered again
    assert "resuming run" not in out.replace("not resuming run", "")
    assert sorted(evil.rglob("*")) == planted  # nothing written outside its own run folder
    assert len(client.search_model_versions("name = 'kronos-tokenizer'")) == 2


def test_an_attackers_own_interrupted_run_with_the_victims_fingerprint_is_not_resumed(cli, serve, tmp_path,
                                                                                     monkeypatch):
    """The attacker trains the victim's command with their own key until a best checkpoint and a
    state exist, stops (KILLED, the state kept), links the victim's private file into their best
    checkpoint and records that file's digests: every tag a real run of theirs writes."""
    url = serve(["server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                 "--artifacts-destination", str(tmp_path / "artifacts")], cwd=tmp_path, env=cli.env())
    victim, evil = tmp_path / "victim", tmp_path / "evil"
    victim.mkdir(), evil.mkdir()
    secret = tmp_path / "victims_secret"
    secret.write_text("the victim's private key")
    secret.chmod(0o600)
    client = MlflowClient(url)
    command = [sys.executable, "-m", "kronos_exp", *TOKENIZER_ONLY, "tokenizer.epochs=3", "checkpoint_every_steps=1",
               f"mlflow.tracking_uri={url}"]
    attacker = subprocess.Popen(command, cwd=evil, env={**cli.env(), "XDG_CONFIG_HOME": str(evil / "config"),
                                                        "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 200
        while not list(evil.rglob("checkpoints/tokenizer/model.safetensors")):
            assert time.time() < deadline and attacker.poll() is None, attacker.stdout.read()[-3000:]
            time.sleep(0.1)
        attacker.send_signal(signal.SIGTERM)
        attacker.communicate(timeout=120)
    finally:
        attacker.kill()
    [theirs] = phase_runs(client, "tokenizer")
    assert theirs.info.status == "KILLED" and Path(theirs.data.tags["last_state"]).is_file()
    best = Path(theirs.data.tags["last_state"]).parent / "tokenizer"
    (best / "stolen").symlink_to(secret)
    theirs_files = sorted(p for p in evil.rglob("*"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    outcome = Pipeline(victim).run(*TOKENIZER_ONLY, "tokenizer.epochs=3", fast=False, check=False, tracking_uri=url)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    out = outcome.stdout + outcome.stderr
    [line] = [line for line in out.splitlines() if f"not resuming run {theirs.info.run_id}" in line]
    assert "is not a training state this user's runs signed" in line
    mine = next(r for r in phase_runs(client, "tokenizer") if r.info.run_id != theirs.info.run_id)
    assert mine.info.status == "FINISHED" and "resumed_from" not in mine.data.tags
    [version] = client.search_model_versions("name = 'kronos-tokenizer'")
    assert version.run_id == mine.info.run_id
    uploaded = [p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert "stolen" not in uploaded and not any("private key" in p.read_text(errors="ignore")
                                                for p in (tmp_path / "artifacts").rglob("*") if p.is_file())
    assert sorted(p for p in evil.rglob("*")) == theirs_files  # nothing of theirs deleted or written
