"""docs/sweeps.md's headless-Chromium command takes a picture of the MLflow page a run prints, the
runs drawn (with ``--virtual-time-budget``; without it the picture is the blank loading page), on a
copy of the session's trained store served by ``mlflow ui``."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness import Cli, page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary (Debian package chromium)")]


def _command() -> list[str]:
    (line,) = [line for line in page("sweeps").splitlines() if line.startswith("chromium --headless")]
    return shlex.split(line)


def test_the_documented_screenshot_command_draws_the_runs(trained, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = Cli(trained.root).env()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen([mlflow, "ui", "--backend-store-uri", trained.tracking_uri, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=trained.root, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow ui did not come up"
                time.sleep(0.3)
        experiment = trained.client().get_experiment_by_name("kronos_exp").experiment_id
        address = f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        picture = tmp_path / "sweep_runs.png"
        args = [CHROMIUM if a == "chromium" else f"--screenshot={picture}" if a.startswith("--screenshot=")
                else address if a == "<the printed address>" else a for a in _command()]
        assert "--virtual-time-budget=10000" in args and address in args
        # As the page says: --no-sandbox where Chromium runs as root; a profile of its own.
        extra = ["--no-sandbox"] if os.geteuid() == 0 else []
        proc = subprocess.run([args[0], *extra, f"--user-data-dir={tmp_path / 'profile'}", *args[1:]],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0 and picture.is_file(), proc.stderr[-3000:]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)

    from PIL import Image

    with Image.open(picture) as image:
        assert image.size == (1600, 520)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # The loading page is a few grey bars on white (a handful of colours); the drawn page has text.
    assert len(colours) > 200, len(colours)
    assert re.search(r"\d+ bytes written", proc.stdout + proc.stderr)
