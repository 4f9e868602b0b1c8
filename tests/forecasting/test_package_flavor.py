"""A packaged predictor is data, and the code that serves it is the installed kronos_exp: its
MLmodel names ``kronos_exp.forecasting.served_model`` as the pyfunc loader, and that loader serves
only a registered version whose every file has its registered digest (in this process here; through
``mlflow models serve``: tests/e2e/test_served_integrity.py). A package made before the flavor
(models-from-code) still loads for the forecast command."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from kronos_exp.data import sample_path
from kronos_exp.forecasting import pyfunc
from kronos_exp.tracking import Registry, Tracker, folder_digests
from kronos_exp.tracking.registry import write_registration
from kronos_exp.window import WindowSpec

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
WINDOW = WindowSpec(horizon=8, max_context=json.loads((PARITY / "meta.json").read_text())["max_context"])
# What kronos_exp <= 0.1 packaged as the model's code (MLflow's models-from-code).
FINGERPRINT = "f0" * 32
OLD_MODEL_CODE = ("import mlflow\n\nfrom kronos_exp.forecasting.pyfunc import KronosForecaster\n\n"
                  "mlflow.models.set_model(KronosForecaster())\n")


def packaged(root: Path) -> Path:
    folder = root / "predictor"
    shutil.copytree(PARITY / "predictor", folder)
    pyfunc.package(folder, PARITY / "tokenizer", WINDOW)
    return folder


def register(root: Path, folder: Path) -> tuple[str, Path]:
    """``folder`` logged and registered as kronos-predictor v1 (its files' digests as the tags) in a
    SQLite store under ``root``: (the store's URI, the stored version's folder)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    write_registration(folder, "kronos-predictor", FINGERPRINT)  # as a phase run does before registering
    tracker = Tracker(uri, "serving")
    with mlflow.start_run(experiment_id=tracker.experiment_id) as run:
        mlflow.log_artifacts(str(folder), "checkpoint")
    version = Registry(tracker.client).register("kronos-predictor", run.info.run_id, "checkpoint",
                                                folder_digests(folder), FINGERPRINT, tags={})
    return uri, Path(urlparse(version.source).path)


def history(rows: int = 64) -> pd.DataFrame:
    df = pd.read_csv(sample_path())
    return df[df["symbol"] == "ACME"].tail(rows).drop(columns=["symbol"]).reset_index(drop=True)


def test_the_package_holds_data_only_and_names_the_installed_loader(tmp_path):
    folder = packaged(tmp_path)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".py", ".pyc", ".pkl"))], files
    assert {"MLmodel", "config.json", "model.safetensors", "window.json", "artifacts/tokenizer/config.json",
            "artifacts/tokenizer/model.safetensors"} <= set(files), files
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "kronos_exp.forecasting.served_model"
    assert not [key for key in ("code", "model_code_path", "artifacts", "python_model", "data") if flavor.get(key)]
    assert flavor["config"]["limits"]["max_pred_len"] > 0  # the serving limits, as model_config
    assert mlmodel["flavors"]["kronos"]["window"] == WINDOW.to_dict()
    params = {p["name"] for p in json.loads(mlmodel["signature"]["params"])}
    assert params == {"pred_len", "T", "top_p", "top_k", "sample_count", "freq", "seed", "raw_candles"}


def test_a_folder_that_is_no_registered_version_is_not_served(tmp_path):
    """Nothing says which registered digests its files must have: refused, naming the models:/ form."""
    folder = packaged(tmp_path)
    with pytest.raises(MlflowException) as refused:
        mlflow.pyfunc.load_model(str(folder))
    message = refused.value.message
    assert message.startswith(f"{folder} is not served: it holds no registration.json, so nothing says which "
                              "registered version it is"), message
    assert "models:/kronos-predictor/<version>" in message and "\n" not in message


@pytest.mark.parametrize("claim", ['{"model_name": "x\' or name != \'", "fingerprint": "ab"}', "[]", "{" * 5000])
def test_a_registration_file_that_names_no_model_plainly_is_refused(tmp_path, claim):
    """The file is untrusted: a name that would change the registry search, JSON of another shape,
    or a huge file is refused as naming nothing."""
    store, stored = register(tmp_path, packaged(tmp_path))
    mlflow.set_tracking_uri(store)
    (stored / "registration.json").write_text(claim)
    with pytest.raises(MlflowException) as refused:
        mlflow.pyfunc.load_model(str(stored))
    assert refused.value.message == (f"{stored} is not served: its registration.json does not name a model and "
                                     "fingerprint; serve a version kronos_exp registered: "
                                     "models:/kronos-predictor/<version> (or @<alias>)")


def test_a_copy_of_a_registered_version_serves_as_that_version(tmp_path):
    """No models:/ URI reaches the loader (MLflow 3.18 writes no registered_model_meta either): the
    folder's registration names the model and fingerprint, its files pick the version."""
    store, stored = register(tmp_path, packaged(tmp_path))
    mlflow.set_tracking_uri(store)
    copy = shutil.copytree(stored, tmp_path / "copy")
    (copy / "registered_model_meta").unlink(missing_ok=True)
    model = mlflow.pyfunc.load_model(str(copy))
    assert len(model.predict(history(), params={"pred_len": 4, "seed": 0})) == 4


@pytest.mark.parametrize("replaced", ["model.safetensors", "config.json", "artifacts/tokenizer/model.safetensors",
                                      "served_model.py"])
def test_a_registered_version_loads_only_with_every_file_as_registered(tmp_path, replaced):
    store, stored = register(tmp_path, packaged(tmp_path))
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    assert len(model.predict(history(), params={"pred_len": 4, "seed": 0})) == 4

    marker = tmp_path / "ran"
    path = stored / replaced
    if path.suffix == ".py":  # planted code: it would make the marker, if anything ran it
        path.write_text(f"import os\nos.mkdir({str(marker)!r})\n")
    else:
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    with pytest.raises(MlflowException) as refused:
        mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    message = refused.value.message
    assert message.startswith(f"kronos-predictor v1 at {stored} is not the registered version ({replaced} "), message
    assert "nothing of it was loaded" in message and "verify models:/kronos-predictor/1" in message
    assert not marker.exists()


def test_a_package_made_before_the_flavor_still_loads_and_serves(tmp_path):
    """Models-from-code (its own served_model.py): the forecast command reads it as data, and its code
    (importing kronos_exp's KronosForecaster) serves it with the same registered-digest check."""
    folder = tmp_path / "predictor"
    shutil.copytree(PARITY / "predictor", folder)
    code = tmp_path / "served_model.py"
    code.write_text(OLD_MODEL_CODE)
    mlmodel = mlflow.models.Model()
    mlmodel.add_flavor("kronos", window=WINDOW.to_dict(), kronos_exp_version="0.1.0")
    mlflow.pyfunc.save_model(path=str(tmp_path / "old"), python_model=str(code), mlflow_model=mlmodel,
                             artifacts={"tokenizer": str(PARITY / "tokenizer")}, signature=pyfunc.signature(8),
                             model_config={"limits": {"max_pred_len": 64}}, pip_requirements=["kronos_exp"])
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(folder / name, tmp_path / "old" / name)
    assert pyfunc.load_predictor(tmp_path / "old").lookback is None and (tmp_path / "old" / "served_model.py").exists()

    store, _ = register(tmp_path, tmp_path / "old")
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    assert len(model.predict(history(), params={"pred_len": 4, "seed": 0})) == 4
    with pytest.raises(MlflowException, match="param pred_len=100 is out of range"):
        model.predict(history(), params={"pred_len": 100})


def test_importing_the_package_writer_warns_nothing():
    """MLflow warns, on every run's console, about a PythonModel whose ``predict`` has no type hints."""
    proc = subprocess.run([sys.executable, "-c", "import kronos_exp.forecasting.pyfunc"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
