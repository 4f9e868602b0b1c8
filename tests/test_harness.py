"""The test harness itself (tests/harness.py): an in-process run leaves the process as it found it,
says what the CLI would have said, and a copy of the trained store is a store of its own."""
from __future__ import annotations

import gc
import logging
import os
import sqlite3
from pathlib import Path

import mlflow
import mlflow.tracking._tracking_service.utils as tracking_utils
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

QUICK = ["phases=tokenizer", "tokenizer.epochs=1", "data.max_train_windows=32", "data.max_eval_windows=16"]


def _process_state() -> dict:
    root = logging.getLogger()
    return {"cwd": os.getcwd(), "environ": dict(os.environ), "tracking_uri": tracking_utils._tracking_uri,
            "threads": torch.get_num_threads(), "root_level": root.level, "root_handlers": list(root.handlers),
            "hydra": GlobalHydra.instance().is_initialized(), "hydra_config": HydraConfig.initialized(),
            "gc": gc.isenabled()}


def test_an_in_process_run_leaves_the_process_as_it_found_it(pipeline, monkeypatch):
    monkeypatch.setenv("KRONOS_EXP_PARENT_RUN_ID", "left-by-a-sweep")  # a single run pops it; it comes back
    before = _process_state()
    done = pipeline.run(*QUICK, "threads=1", fast=False)
    assert _process_state() == before and mlflow.active_run() is None
    assert done.returncode == 0 and done.objective == done.objective  # a number, not nan
    assert "kronos_exp tokenizer" in done.stdout and "done in" in done.stdout  # the banner and closing lines
    assert (done.output_dir / ".hydra" / "overrides.yaml").is_file() and (done.output_dir / "kronos_exp.log").is_file()
    failed = pipeline.run(*QUICK, "tokenizer.lr=0", fast=False, check=False)
    assert _process_state() == before and mlflow.active_run() is None
    assert failed.returncode == 1 and failed.stderr.splitlines()[-1].startswith("error: tokenizer.lr=0.0; valid:")
    refused = pipeline.run("tokenizer.lrr=1", check=False)  # Hydra refuses it at compose time
    assert refused.returncode == 1 and "tokenizer.lrr" in refused.stderr and _process_state() == before


def test_a_copy_of_the_trained_store_is_a_store_of_its_own(trained_store, trained):
    assert trained.root != trained_store.root and trained.outcome is trained_store.outcome
    with sqlite3.connect(trained.root / "mlflow.db") as con:
        dump = "\n".join(con.iterdump())
    assert str(trained_store.root) + "/" not in dump and str(trained.root) + "/" in dump
    version = trained.versions("kronos-predictor")[0]
    assert Path(version.source.removeprefix("file://")).is_relative_to(trained.root)
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, tracking_uri=trained.tracking_uri)
    assert (Path(local) / "model.safetensors").is_file()
    before = trained_store.digest()
    trained.run("phases=both", "skip_existing=true", *trained.SETTINGS, fast=False)  # reuses both, in the copy
    assert {r.data.tags["skipped"] for r in trained.runs()[-2:]} == {"true"}
    assert trained_store.digest() == before and len(trained_store.runs()) == 4
