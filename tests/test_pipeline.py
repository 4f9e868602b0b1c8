"""The pipeline end to end, in this process (compose + `pipeline.run`, as `python -m kronos_exp` runs it):
MLflow contents, registry, skip_existing, reproducibility."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kronos_exp.model import Kronos, KronosTokenizer


def _by_phase(runs):
    return {r.data.tags.get("phase"): r for r in runs if "phase" in r.data.tags}


@pytest.fixture(scope="module")
def first_run(module_pipeline):
    return module_pipeline.run("phases=both")


def test_both_phases_land_in_mlflow(module_pipeline, first_run):
    proc = first_run
    runs = module_pipeline.runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    phases = _by_phase(runs)
    assert set(phases) == {"tokenizer", "predictor"}
    for run in runs:
        assert run.info.status == "FINISHED"
    for run in phases.values():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # Params: the flattened resolved config, on the job run.
    assert parent.data.params["tokenizer.lr"] == "0.002"
    assert parent.data.params["data.lookback_window"] == "64"
    assert {"tokenizer_val_loss", "predictor_val_loss", "objective"} <= set(parent.data.metrics)
    assert parent.data.metrics["objective"] == pytest.approx(parent.data.metrics["predictor_val_loss"])

    client = module_pipeline.client()
    expected = {
        "tokenizer": {"train_recon_loss", "train_bsq_loss", "val_codebook_usage", "val_s1_codebook_usage"},
        "predictor": {"train_ce_s1", "train_ce_s2", "val_s1_accuracy", "val_s2_accuracy"},
    }
    for name, run in phases.items():
        metrics = set(run.data.metrics)
        assert {"train_loss", "lr", "val_loss", "samples_per_second", "duration_s", "datasets_s",
                "best_val_loss"} <= metrics
        assert expected[name] <= metrics
        val = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in val] == [0, 1]  # one per epoch, step = epoch
        assert val[-1].value < val[0].value, f"{name} val_loss did not fall: {[m.value for m in val]}"
        train = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(train) >= 2 and [m.step for m in train] == sorted(m.step for m in train)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        # Every checkpoint carries the window it was trained on (kronos_exp/window.py) and says which
        # registered model and fingerprint it is (tracking/registry.py REGISTRATION_FILE).
        weights = {"checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/window.json",
                   "checkpoint/registration.json"}
        # The predictor's checkpoint is also an MLflow pyfunc model with its tokenizer inside.
        served = {"checkpoint/MLmodel", "checkpoint/artifacts"} if name == "predictor" else set()
        assert weights | served <= artifacts and (name == "predictor" or artifacts == weights)
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert f"plots/{name}_loss_curve.png" in plots
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config", "logs", "data_summary.json"} <= top
    config_files = {a.path for a in client.list_artifacts(parent.info.run_id, "config")}
    assert "config/resolved.yaml" in config_files and "config/hydra" in config_files
    assert "mlflow ui --backend-store-uri" in proc.stderr + proc.stdout


def test_each_phase_registers_one_loadable_version(module_pipeline, first_run, tmp_path):
    import mlflow

    for name, cls in (("kronos-tokenizer", KronosTokenizer), ("kronos-predictor", Kronos)):
        versions = module_pipeline.versions(name)
        assert len(versions) == 1
        assert len(versions[0].tags["fingerprint"]) == 64
        mlflow.set_tracking_uri(module_pipeline.tracking_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=versions[0].source, dst_path=str(tmp_path / name))
        model = cls.from_pretrained(local)
        assert json.loads((tmp_path / name / "checkpoint" / "config.json").read_text()) == model.config
    predictor_tags = module_pipeline.versions("kronos-predictor")[0].tags
    assert predictor_tags["tokenizer_fingerprint"] == module_pipeline.versions("kronos-tokenizer")[0].tags["fingerprint"]


def test_skip_existing_reuses_everything(module_pipeline, first_run):
    before = len(module_pipeline.runs())
    module_pipeline.run("phases=both", "skip_existing=true")
    runs = module_pipeline.runs()[before:]
    phases = _by_phase(runs)
    assert {p: r.data.tags["skipped"] for p, r in phases.items()} == {"tokenizer": "true", "predictor": "true"}
    assert phases["tokenizer"].data.tags["reused_version"] == "1"
    assert len(module_pipeline.versions("kronos-tokenizer")) == 1
    assert len(module_pipeline.versions("kronos-predictor")) == 1
    for run in phases.values():  # nothing trained: no train metrics, no checkpoint logged
        assert "train_loss" not in run.data.metrics
        assert module_pipeline.client().list_artifacts(run.info.run_id, "checkpoint") == []


def test_changing_predictor_lr_retrains_only_the_predictor(module_pipeline, first_run):
    before = len(module_pipeline.runs())
    module_pipeline.run("phases=both", "skip_existing=true", "predictor.lr=0.001")
    phases = _by_phase(module_pipeline.runs()[before:])
    assert phases["tokenizer"].data.tags["skipped"] == "true"
    assert phases["predictor"].data.tags["skipped"] == "false"
    assert len(module_pipeline.versions("kronos-tokenizer")) == 1
    assert len(module_pipeline.versions("kronos-predictor")) == 2


OWN_PREDICTOR = """
from kronos_exp.phases import PredictorPhase


class DoubledLossPredictor(PredictorPhase):
    \"\"\"A predictor phase of one's own: its loss differs from the built-in one's, so does what it trains.\"\"\"

    def loss(self, model, batch):
        return {k: 2 * v for k, v in super().loss(model, batch).items()}
"""


def test_a_phase_runner_of_ones_own_is_not_reused_for_another(module_pipeline, first_run, monkeypatch):
    """skip_existing reuses a checkpoint for the runner class that trained it: a ``_target_`` outside
    kronos_exp enters the fingerprint with the sha256 of the file that defines it."""
    import sys

    source = module_pipeline.root / "own_phases.py"
    source.write_text(OWN_PREDICTOR)
    monkeypatch.syspath_prepend(str(module_pipeline.root))  # where python -m kronos_exp finds it: the cwd
    own = ("phases=both", "skip_existing=true", "phases.predictor._target_=own_phases.DoubledLossPredictor")

    def trained(*overrides) -> dict[str, str]:
        sys.modules.pop("own_phases", None)  # as a new process imports it: the file as it is now
        before = len(module_pipeline.runs())
        module_pipeline.run(*overrides)
        return {p: r.data.tags["skipped"] for p, r in _by_phase(module_pipeline.runs()[before:]).items()}

    assert trained(*own) == {"tokenizer": "true", "predictor": "false"}  # not the built-in runner's checkpoint
    assert trained(*own) == {"tokenizer": "true", "predictor": "true"}  # its own, found again
    source.write_text(OWN_PREDICTOR.replace("2 * v", "3 * v"))
    assert trained(*own) == {"tokenizer": "true", "predictor": "false"}  # its file changed
    assert trained("phases=both", "skip_existing=true") == {"tokenizer": "true", "predictor": "true"}  # the built-in's
    runners = {v.tags["fingerprint"] for v in module_pipeline.versions("kronos-predictor")}
    assert len(runners) == len(module_pipeline.versions("kronos-predictor"))


def test_two_invocations_equal_one_run_of_both(module_pipeline, first_run, pipeline):
    pipeline.run("phases=tokenizer")
    pipeline.run("phases=predictor")
    split = {v.tags["fingerprint"]: float(v.tags["best_val_loss"]) for v in pipeline.versions("kronos-predictor")}
    together = module_pipeline.versions("kronos-predictor")[0]
    assert split == {together.tags["fingerprint"]: float(together.tags["best_val_loss"])}
    phases = _by_phase(pipeline.runs())
    assert phases["predictor"].data.tags["tokenizer_fingerprint"] == pipeline.versions("kronos-tokenizer")[0].tags["fingerprint"]


def test_one_changed_csv_row_retrains(pipeline, tmp_path):
    from kronos_exp.data import sample_path

    lines = sample_path().read_text().splitlines()
    csv = tmp_path / "prices.csv"
    csv.write_text("\n".join(lines) + "\n")
    common = ("phases=tokenizer", "data=csv", f"data.path={csv}", "data.symbol_column=symbol", "data.stride=2",
              "data.max_train_windows=128", "data.max_eval_windows=32", "skip_existing=true", "tokenizer.epochs=1")
    pipeline.run(*common)
    pipeline.run(*common)
    assert len(pipeline.versions("kronos-tokenizer")) == 1
    header, row = lines[0].split(","), lines[500].split(",")
    row[header.index("volume")] = str(float(row[header.index("volume")]) + 1)
    lines[500] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n")
    pipeline.run(*common)
    assert len(pipeline.versions("kronos-tokenizer")) == 2


def test_checkpoints_load_into_a_forecast(module_pipeline, first_run, tmp_path):
    import pandas as pd

    from kronos_exp.data import sample_path
    from kronos_exp.forecasting import KronosPredictor
    import mlflow

    mlflow.set_tracking_uri(module_pipeline.tracking_uri)
    folders = {}
    for name in ("kronos-tokenizer", "kronos-predictor"):
        source = module_pipeline.versions(name)[0].source
        folders[name] = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / name))
    predictor = KronosPredictor(Kronos.from_pretrained(folders["kronos-predictor"]),
                                KronosTokenizer.from_pretrained(folders["kronos-tokenizer"]), device="cpu")
    df = pd.read_csv(sample_path(), parse_dates=["timestamps"])
    df = df[df["symbol"] == df["symbol"].iloc[0]].reset_index(drop=True)
    hist, future = df.iloc[:64], df.iloc[64:72]
    torch.manual_seed(0)
    out = predictor.predict(hist, hist["timestamps"], future["timestamps"], pred_len=8, verbose=False)
    assert list(out.columns) == ["open", "high", "low", "close", "volume", "amount"] and len(out) == 8
    assert out.notna().all().all()


def test_copied_csv_and_pretrained_folders_reuse_both_phases(pipeline, tmp_path):
    """Fingerprints follow content: the same CSV and weights in other folders, given by absolute
    instead of relative paths, are the same phases."""
    import shutil
    from pathlib import Path

    from kronos_exp.data import sample_path

    fixtures = Path(__file__).resolve().parent / "fixtures" / "parity"
    for folder in ("a", "b"):
        (pipeline.root / folder).mkdir()
        shutil.copy(sample_path(), pipeline.root / folder / "prices.csv")
        for phase in ("tokenizer", "predictor"):
            shutil.copytree(fixtures / phase, pipeline.root / folder / phase)
    common = ("phases=both", "data=csv", "data.symbol_column=symbol", "data.max_train_windows=64",
              "data.max_eval_windows=16", "tokenizer.epochs=1", "predictor.epochs=1", "skip_existing=true")
    pipeline.run(*common, "data.path=a/prices.csv", "tokenizer.pretrained=a/tokenizer", "predictor.pretrained=a/predictor")
    before = len(pipeline.runs())
    b = pipeline.root / "b"
    pipeline.run(*common, f"data.path={b}/prices.csv", f"tokenizer.pretrained={b}/tokenizer",
            f"predictor.pretrained={b}/predictor", "predictor.arch.d_model=64",  # the checkpoint decides the arch
            "predictor.log_interval=1", "num_workers=0", "device=cpu")
    phases = _by_phase(pipeline.runs()[before:])
    assert {p: r.data.tags["skipped"] for p, r in phases.items()} == {"tokenizer": "true", "predictor": "true"}
    assert len(pipeline.versions("kronos-tokenizer")) == 1 and len(pipeline.versions("kronos-predictor")) == 1


def test_predictor_alone_finds_the_tokenizer_with_its_own_seed_and_explains_a_miss(pipeline):
    quick = ("data.max_train_windows=64", "data.max_eval_windows=16", "tokenizer.epochs=1", "predictor.epochs=1")
    pipeline.run("phases=tokenizer", *quick)
    # predictor.seed seeds the predictor alone: the tokenizer trained with the run's seed is found.
    pipeline.run("phases=predictor", "predictor.seed=1", *quick)
    assert pipeline.versions("kronos-predictor")[0].tags["tokenizer_version"] == "kronos-tokenizer/1"
    # The run's seed is every phase's seed: no tokenizer has seed=1, and the error says what differs.
    proc = pipeline.run("phases=predictor", "seed=1", "tokenizer.lr=0.001", *quick, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "registered for this data: kronos-tokenizer v1 differs in seed: 1 (registered: 42); " \
           "settings.lr: 0.001 (registered: 0.002)" in line, line


def test_fine_tunes_from_published_layout_checkpoints(trained_store, tmp_path):
    """The session's trained store was fine-tuned from the parity checkpoints (published layout)."""
    from harness import PARITY as FIXTURE

    proc, cli = trained_store.outcome, trained_store
    # MLflow records the architecture that trained (the checkpoint's, d_model 32), not the preset's (64).
    predictor_config = json.loads((FIXTURE / "predictor" / "config.json").read_text())
    for run in cli.runs():
        if run.data.tags.get("phase") in (None, "predictor"):
            assert run.data.params["predictor.arch.d_model"] == str(predictor_config["d_model"])
            assert run.data.params["predictor.arch.n_layers"] == str(predictor_config["n_layers"])
    assert f"predictor: starting from the pretrained weights {FIXTURE / 'predictor'}" in proc.stdout + proc.stderr
    for name, folder in (("kronos-tokenizer", "tokenizer"), ("kronos-predictor", "predictor")):
        version = cli.versions(name)[0]
        run = cli.client().get_run(version.run_id)
        local = cli.client().download_artifacts(run.info.run_id, "checkpoint", str(tmp_path / name))
        saved = json.loads((Path(local) / "config.json").read_text())
        assert saved == json.loads((FIXTURE / folder / "config.json").read_text())
