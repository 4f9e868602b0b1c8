"""``mlflow models serve -m models:/kronos-predictor/1`` serves only the registered files: the
package's code is the installed kronos_exp (its MLmodel names the loader module), and that loader
checks every file against the version's registered digests before it loads any. The replaced-file
attack on a copy of the session's trained store (its version registered by the real pipeline): a
writer of the artifact store replaces weights, a config or the tokenizer, or plants Python; the
server refuses with one sentence naming the file, and nothing planted runs."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from model_server import ModelServer
from test_served_model import history

pytestmark = pytest.mark.e2e


def stored_version(trained) -> Path:
    """The registered version's folder in the store's artifacts: what the server loads in place."""
    return Path(urlparse(trained.client().get_model_version("kronos-predictor", "1").source).path)


def _flip_last_byte(path: Path, marker: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _plant_code(path: Path, marker: Path) -> None:
    path.write_text(f"import os\nos.mkdir({str(marker)!r})\n")


ATTACKS = {  # the file replaced or added -> how
    "model.safetensors": _flip_last_byte,
    "config.json": _flip_last_byte,
    "artifacts/tokenizer/model.safetensors": _flip_last_byte,
    "served_model.py": _plant_code,
}


@pytest.mark.parametrize("replaced", list(ATTACKS))
def test_a_replaced_file_is_refused_by_mlflow_models_serve(trained, replaced):
    stored, marker = stored_version(trained), trained.root / "ran"
    ATTACKS[replaced](stored / replaced, marker)
    with pytest.raises(AssertionError, match="did not come up"):
        server = ModelServer(trained.root, trained.tracking_uri)
        server.stop()  # it came up: the assertion below says what it served
        pytest.fail(f"mlflow models serve served a version whose {replaced} was replaced")
    log = (trained.root / "server.log").read_text()
    sentence = f"kronos-predictor v1 at {stored} is not the registered version ({replaced} "
    assert sentence in log, log[-3000:]
    assert "verify models:/kronos-predictor/1" in log
    lines = [line for line in log.splitlines() if sentence in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), log[-3000:]  # one line, said once
    # No traceback through kronos_exp: uvicorn exits with that line (MLflow's CLI then reports the exit).
    assert "kronos_exp/" not in log and "NotServed" not in log, log[-3000:]
    assert not marker.exists()


def test_an_intact_version_serves(trained):
    server = ModelServer(trained.root, trained.tracking_uri)
    try:
        status, body, _ = server.ask(history(), pred_len=4, seed=0)
    finally:
        server.stop()
    assert status == 200 and len(json.loads(body)["predictions"]) == 4, body[:500]
