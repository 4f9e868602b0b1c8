"""The experiment opens on its training runs in MLflow 3's UI: created with the training kind, an
older experiment without a kind given it, and the printed command names the runs page."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from kronos_exp.tracking import Tracker
from kronos_exp.tracking.ui import EXPERIMENT_KIND_TAG


def test_a_new_experiment_is_of_the_training_kind_and_the_ui_command_names_its_runs_page(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "kronos_exp")
    assert tracker.client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracker.ui_command() == (f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/#/experiments/"
                                    f"{tracker.experiment_id}/runs?workflowType=machine_learning")
    assert tracker.ui_command(view="sweep-1").endswith("/runs?workflowType=machine_learning&viewStateShareKey=sweep-1")


def test_an_older_experiment_gets_the_kind_and_a_chosen_kind_stays(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("old")  # as versions before this one made it
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "forecasting"})
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert Tracker(uri, "old").experiment_id == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    Tracker(uri, "chosen")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "forecasting"
