"""A tracking server that is away at the start, or lost during a run, never hangs the run:
training goes on, metrics wait for the server, and the user learns where the checkpoint is. A sweep
that loses it names each failed job and exits non-zero; its run ends once the server is back."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness import LEAN_SERVER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

TRAIN = ["phases=tokenizer", "tokenizer.epochs=3", "data.max_train_windows=256", "data.max_eval_windows=32",
         "tokenizer.log_interval=1"]


class Server:
    """``mlflow server`` on a fixed loopback port that a test can kill and start again."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env, self.port = root, env, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        self.proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
                                      "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                                     cwd=self.root, env={**self.env, **LEAN_SERVER},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"mlflow server did not come up on {self.url}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def server(cli):
    s = Server(cli.root, cli.env())
    s.start()
    yield s
    if s.proc.poll() is None:
        s.kill()


def _start_training(cli, url: str, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kronos_exp", *TRAIN, *overrides, f"mlflow.tracking_uri={url}"]
    proc = subprocess.Popen(cmd, cwd=cli.root, env={**cli.env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "tokenizer: training" in line:
            return proc
    proc.wait()
    raise AssertionError("the run ended before training started:\n" + "".join(seen)[-3000:])


def _wait_for_line(proc: subprocess.Popen, text: str) -> None:
    """Read the run's output until a line that says ``text`` (pytest-timeout bounds the wait)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    proc.wait()
    raise AssertionError(f"the run never said {text!r}:\n" + "".join(seen)[-3000:])


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_unreachable_server_at_start_is_one_line(cli):
    url = f"http://127.0.0.1:{_free_port()}"
    proc = subprocess.run([sys.executable, "-m", "kronos_exp", *TRAIN, f"mlflow.tracking_uri={url}"], cwd=cli.root,
                          env=cli.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: no MLflow tracking server answers at mlflow.tracking_uri={url}; start it (mlflow server ...), "
        "fix the address, or use mlflow.tracking_uri=null for the local store")
    assert "Traceback" not in proc.stderr


def test_a_server_lost_for_good_ends_the_run_with_the_checkpoint_on_disk(cli, server):
    proc = _start_training(cli, server.url, "mlflow.offline_wait_s=5")
    server.kill()
    # MLflow's default retries took minutes per call: it would hang here. The bound leaves a loaded machine
    # room for the 5 s wait and a few refused calls.
    out = _finish(proc, timeout=180)
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the MLflow tracking server at {server.url} during the run"), out[-3000:]
    assert last.endswith("Run the same command again once the server is back; it marks the MLflow runs left "
                         "RUNNING here FAILED"), last  # the runs could not be ended: said, and recorded to end
    checkpoint = Path(last.split("the checkpoints are on local disk: ")[1].split(". Run")[0])
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "config.json").is_file()


def test_metrics_logged_while_the_server_is_away_arrive_when_it_returns(cli, server):
    proc = _start_training(cli, server.url, "mlflow.offline_wait_s=180")
    server.kill()
    # Training goes on meanwhile: metrics are logged while the server is away (the buffer says it keeps
    # them) before it is back, however long a loaded machine takes to get there.
    _wait_for_line(proc, "the tracking server does not take metrics")
    server.start()
    out = _finish(proc, timeout=300)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(server.url)
    runs = client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id])
    phase = next(r for r in runs if r.data.tags.get("phase") == "tokenizer")
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert [m.step for m in client.get_metric_history(phase.info.run_id, "val_loss")] == [0, 1, 2]
    steps = [m.step for m in client.get_metric_history(phase.info.run_id, "train_loss")]
    assert steps == list(range(1, len(steps) + 1))  # every optimizer step, none lost in the outage


# A lost server costs one refused connection per call, not minutes of retries: these tests stop the server on
# purpose. A refused connection fails at once whatever the timeout, so the timeout is only what a server that
# answers slowly on a loaded machine gets (CI saw 1 s fail; 30 s leaves room for a busy 2-core machine).
BRIEF = ["mlflow.http_timeout_s=30", "mlflow.http_max_retries=0"]


def _statuses(url: str) -> dict[str, str]:
    client = MlflowClient(url)
    return {r.info.run_id: r.info.status
            for r in client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id])}


def test_runs_stopped_while_the_server_is_away_end_killed_once_it_answers(cli, server):
    proc = _start_training(cli, server.url, "tokenizer.epochs=50", *BRIEF)
    server.kill()
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, timeout=120)
    assert proc.returncode == 143, out[-3000:]
    assert "the MLflow runs are marked KILLED" not in out  # they are not: the server is away
    assert ("interrupted: the MLflow runs could not be marked KILLED (the tracking server did not answer); the next "
            "invocation on this store marks them; run the same command again to resume") in out, out[-3000:]
    server.start()  # the same port and store
    stopped = _statuses(server.url)
    assert sorted(stopped.values()) == ["RUNNING", "RUNNING"]

    later = _start_training(cli, server.url, *BRIEF, "tokenizer.epochs=1", "data.max_train_windows=64")  # started
    statuses = _statuses(server.url)
    assert {statuses[run_id] for run_id in stopped} == {"KILLED"}, statuses
    assert _finish(later, timeout=300) and later.returncode == 0
    client = MlflowClient(server.url)
    assert all(client.get_run(run_id).data.tags["stopped"].startswith("interrupted") for run_id in stopped)
    assert "RUNNING" not in _statuses(server.url).values()


def test_ctrl_c_stops_a_run_whose_server_is_lost(cli, server):
    proc = _start_training(cli, server.url, "tokenizer.epochs=50")
    server.kill()
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out = _finish(proc, timeout=120)  # default retries (2) on each refused call; MLflow's own took minutes each
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out


def test_metrics_the_server_refuses_are_dropped_and_the_later_ones_arrive(server, monkeypatch, caplog):
    """A 4xx is the server's answer, not its absence: the refused metrics are dropped with one warning
    each time, the metrics behind them go through, and the run is not reported as lost (defect 8)."""
    import mlflow

    from kronos_exp.tracking import Tracker

    for key in ("TIMEOUT", "MAX_RETRIES", "BACKOFF_FACTOR", "BACKOFF_JITTER"):  # Tracker sets them for a remote
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{key}", "")  # server: undone after the test
    tracker = Tracker(server.url, "refusals", offline_wait_s=20)
    client = tracker.client
    run = client.create_run(tracker.experiment_id).info.run_id
    gone = client.create_run(tracker.experiment_id).info.run_id
    client.delete_run(gone)
    too_long = "k" * 300  # MLflow refuses names over 250 characters with a 400
    tracker.metrics.put(run, {"loss": 1.0, too_long: 2.0}, step=0)  # one batch: a refused name beside a good one
    tracker.metrics.put(gone, {"loss": 3.0}, step=0)  # a run deleted meanwhile: refused with a 400
    tracker.metrics.put(run, {"loss": 0.5}, step=1)
    assert tracker.metrics.flush(20)
    tracker.wait_for_metrics()  # no TrackingUnavailable: the server answered all along
    assert [(m.step, m.value) for m in client.get_metric_history(run, "loss")] == [(0, 1.0), (1, 0.5)]
    assert tracker.metrics.last_error is None
    refusals = [r.getMessage() for r in caplog.records if "refused metric" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert f"'{too_long[:80]}' of run {run}" in refusals[0] and "exceeds the maximum length" in refusals[0]
    assert f"'loss' of run {gone}" in refusals[1] and "must be in the 'active' state" in refusals[1]
    mlflow.set_tracking_uri("")


def test_a_sweep_whose_server_is_lost_exits_non_zero_naming_each_failed_job(cli, server, tmp_path):
    """3 jobs (basic launcher), the server lost once job 0 finished: jobs 1 and 2 fail, each says so in
    one line, the sweep ends non-zero without a traceback (its atexit handler included) and no
    password; its run, left RUNNING, is ended FAILED by the next command once the server is back."""
    url = server.url.replace("http://", "http://kronos:s3cret@")  # the server takes any login
    tiny = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=64", "data.max_eval_windows=16",
            *BRIEF, f"mlflow.tracking_uri={url}"]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "kronos_exp", "-m", "seed=1,2,3", *tiny], cwd=cli.root,
                                env={**cli.env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=stderr,
                                text=True)
        _wait_for_line(proc, "#1 : ")  # the basic launcher starts job 1 once job 0 has ended
        server.kill()
        out = _finish(proc, timeout=120)
    err = errors.read_text()
    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err and "s3cret" not in out + err, out[-3000:] + err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    shown = url.replace("s3cret", "***")
    assert lines[:2] == [f"error: job {n}: no MLflow tracking server answers at mlflow.tracking_uri={shown}; start it "
                         "(mlflow server ...), fix the address, or use mlflow.tracking_uri=null for the local store"
                         for n in (1, 2)], err[-3000:]
    assert len(lines) == 3 and re.fullmatch(
        re.escape(f"error: lost the MLflow tracking server at {shown} during sweep ") + r"sweep-[0-9-]+" + re.escape(
            ": 2 of its jobs did not finish (jobs 1, 2; their errors are printed above); the next command on this "
            "store marks the sweep run FAILED once the server answers again"), lines[2]), err[-3000:]

    server.start()
    assert "RUNNING" in _statuses(server.url).values()  # the sweep run: nobody could end it yet
    later = subprocess.run([sys.executable, "-m", "kronos_exp", *tiny], cwd=cli.root, env=cli.env(),
                           capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stderr[-3000:]
    client = MlflowClient(server.url)
    runs = client.search_runs([client.get_experiment_by_name("kronos_exp").experiment_id])
    (sweep,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert sweep.info.status == "FAILED" and "was lost during the sweep" in sweep.data.tags["error"]
    assert "RUNNING" not in {r.info.status for r in runs}
