"""docs/sweeps.md's headless-Chromium command takes a picture of the MLflow page a run prints, the
runs drawn (with ``--virtual-time-budget``; without it the picture is the blank loading page), on a
copy of the session's trained store served by ``mlflow ui`` (the ``serve`` fixture)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest

from harness import Cli, page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary (Debian package chromium)")]


def _command() -> list[str]:
    (line,) = [line for line in page("sweeps").splitlines() if line.startswith("chromium --headless")]
    return shlex.split(line)


def test_the_documented_screenshot_command_draws_the_runs(trained, serve, tmp_path):
    url = serve(["ui", "--backend-store-uri", trained.tracking_uri], trained.root, Cli(trained.root).env())
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

    from PIL import Image

    with Image.open(picture) as image:
        assert image.size == (1600, 520)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # The loading page is a few grey bars on white (a handful of colours); the drawn page has text.
    assert len(colours) > 200, len(colours)
    assert re.search(r"\d+ bytes written", proc.stdout + proc.stderr)
