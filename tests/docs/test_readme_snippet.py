"""The manual's Python snippet (docs/phases.md, "Starting from published weights") runs as shown,
given the checkpoint folders of a run."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from harness import snippet

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "parity"


def test_readme_python_snippet_forecasts_from_a_runs_checkpoint_folders(tmp_path, monkeypatch, capsys):
    code = snippet("snippet")
    run = re.search(r'^run = "([^"]+)"', code, re.M).group(1)
    # A run's folders, as the snippet names them (the parity fixture stands in for trained weights).
    for phase in ("tokenizer", "predictor"):
        shutil.copytree(FIXTURES / phase, tmp_path / run / "checkpoints" / phase)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/phases.md:snippet", "exec"), namespace)
    forecast, y_timestamp = namespace["forecast"], namespace["y_timestamp"]
    assert forecast.shape == (24, 6) and list(forecast.index) == list(y_timestamp)
    assert forecast.notna().all().all()
    assert "close" in capsys.readouterr().out
