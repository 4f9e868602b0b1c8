"""``mlflow models serve -m models:/kronos-predictor/1 --env-manager local`` on a free loopback port,
for the tests that talk to a served predictor over HTTP."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd


class ModelServer:
    """One served model; ``stop`` ends it (SIGTERM to its process group, the CLI and uvicorn)."""

    def __init__(self, root: Path, store: str, env: dict[str, str] | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_TRACKING_URI=store, MLFLOW_DISABLE_TELEMETRY="true")
        # `mlflow models serve` starts `uvicorn` by name: this interpreter's bin/ first on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(root / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", "models:/kronos-predictor/1",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    log = self.tail()
                    self.stop()
                    raise AssertionError(f"mlflow models serve did not come up: {log}")
                time.sleep(0.3)

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def ask(self, frame: pd.DataFrame, timeout: float = 60, **params) -> tuple[int, str, float]:
        """(status, body, seconds) of one request."""
        split = json.loads(frame.to_json(orient="split", index=False, date_format="iso"))
        request = urllib.request.Request(f"{self.url}/invocations", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"dataframe_split": split, "params": params}).encode())
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, answer.read().decode(), time.monotonic() - start
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), time.monotonic() - start

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the CLI and the uvicorn worker it started
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
