"""``python -m kronos_exp.forecasting verify models:/<name>/<version>`` (run in this process): every
file of a registered version, MLmodel included, against the digests the registry holds, with nothing
of the package imported or run; on a copy of the session's trained store. The manual's example
(docs/serving.md) is this command's real output."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

from harness import forecast_command, manual_text

ROOT = Path(__file__).resolve().parents[2]
URI = "models:/kronos-predictor/1"


def stored_version(trained) -> Path:
    return Path(urlparse(trained.client().get_model_version("kronos-predictor", "1").source).path)


def verify(trained, *args: str):
    return forecast_command(trained.root, "verify", *args, f"tracking_uri={trained.tracking_uri}")


def test_an_intact_version_matches_and_the_readme_shows_the_real_output(trained):
    shown = re.search(r"^\$ (python -m kronos_exp\.forecasting verify \S+)\n(.+)$", manual_text(), re.M)
    assert shown, "the manual lost its verify example"
    command, output = shown.groups()
    assert command == f"python -m kronos_exp.forecasting verify {URI}"
    files = len([p for p in stored_version(trained).rglob("*") if p.is_file() and p.name != "registered_model_meta"])

    proc = verify(trained, URI)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{URI}: {files} files match the registered digests\n"
    assert proc.stdout == output + "\n"  # the manual's line, as the command prints it
    alias = verify(trained, "models:/kronos-predictor@best")
    assert alias.returncode == 0 and alias.stdout.startswith("models:/kronos-predictor@best: "), alias.stderr


def test_an_edited_mlmodel_and_replaced_weights_are_each_named(trained):
    stored = stored_version(trained)
    mlmodel = yaml.safe_load((stored / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]  # what a writer of the artifact store would plant
    flavor.update(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl")
    (stored / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    weights = stored / "artifacts" / "tokenizer" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    (stored / "python_model.pkl").write_bytes(b"not run")

    proc = verify(trained, URI)
    assert proc.returncode == 1, proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert lines[0].startswith(f"{URI}: MLmodel differs from the registered file (sha256 "), lines
    assert lines[1].startswith(f"{URI}: artifacts/tokenizer/model.safetensors differs from the registered file"), lines
    assert lines[2].startswith(f"{URI}: python_model.pkl is not one of its registered files ("), lines


def test_a_missing_version_or_store_is_one_error_line(trained, tmp_path):
    missing = verify(trained, "models:/kronos-predictor/9")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: cannot load models:/kronos-predictor/9 from "), missing.stderr
    assert len(missing.stderr.splitlines()) == 1, missing.stderr
    proc = forecast_command(tmp_path, "verify", URI, f"tracking_uri=sqlite:///{tmp_path}/none.db")
    assert proc.returncode == 1 and proc.stderr.startswith("error: no MLflow store at "), proc.stderr
    usage = forecast_command(tmp_path, "verify", "outputs/checkpoints/predictor")
    assert usage.returncode == 1
    assert usage.stderr.startswith("error: verify takes a registered version, models:/<name>/<version>"), usage.stderr
