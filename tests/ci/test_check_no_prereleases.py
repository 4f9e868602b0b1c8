"""`.ci/check_no_prereleases.py` fails on a pre-release among the dependencies, and only there."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "check_no_prereleases.py"


def _dist(site: Path, name: str, version: str, requires: list[str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("hydra_version, ok", [("1.3.2", True), ("1.4.0rc3", False), ("1.3.3.dev1", False)])
def test_a_prerelease_plugin_dependency_fails_the_check(tmp_path, hydra_version, ok):
    # A site folder with real dist-info metadata: kronos_exp[dev] -> plugin -> hydra-core (the 2026 case).
    site = tmp_path / "site"
    _dist(site, "kronos_exp", "0.1.0", ["omegaconf>=2.3", 'hydra-optuna-sweeper==1.3.0; extra == "dev"'])
    _dist(site, "hydra-optuna-sweeper", "1.3.0", ["hydra-core>=1.1.0.dev7"])
    _dist(site, "hydra-core", hydra_version, [])
    _dist(site, "omegaconf", "2.3.0", [])
    proc = subprocess.run([sys.executable, str(SCRIPT), "dev"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert (proc.returncode == 0) == ok, proc.stderr
    if not ok:
        assert f"pre-release installed: hydra-core {hydra_version} (required by hydra-optuna-sweeper)" in proc.stderr
