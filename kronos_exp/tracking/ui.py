"""What the MLflow UI shows first: the experiment as model training (not GenAI traces), the page
of its runs, and a saved view of a sweep's job runs with their swept parameters and metrics as
columns. The UI shows no metric column unless asked; a view saved in the experiment (MLflow's
shared view state) asks for them, and a link opens it.
"""
from __future__ import annotations

import json
import urllib.parse

from mlflow.tracking import MlflowClient

# MLflow 3's experiment kind for model training (the UI names it "Machine learning").
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# The UI's workflow of the same kind. Since MLflow 3.x the UI chooses its pages by this workflow
# (a URL parameter, else the browser's last choice, GenAI at first), not by the experiment's kind.
UI_WORKFLOW = "machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the view's key: the UI's "share view" state


def ensure_training_kind(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    """Give an experiment made without a kind (by an earlier version) the training kind; a kind
    someone chose stays."""
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def runs_page(base_url: str, experiment_id: str, view: str | None = None) -> str:
    """The UI's page of the experiment's runs, as model training, in the saved ``view`` if given."""
    query = {"workflowType": UI_WORKFLOW, **({"viewStateShareKey": view} if view else {})}
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def column(kind: str, name: str) -> str:
    """The UI's name of a run-table column: ``metrics.`objective```, ``params.`predictor.lr```."""
    return f"{kind}.`{name}`"


def save_runs_view(client: MlflowClient, experiment_id: str, key: str, search_filter: str,
                   columns: list[str], order_by: str, ascending: bool) -> None:
    """Save a runs-table view in the experiment: the runs ``search_filter`` matches, flat, sorted
    by ``order_by``, with ``columns`` shown. ``runs_page(..., view=key)`` opens it."""
    state = {"searchFilter": search_filter, "orderByKey": order_by, "orderByAsc": ascending,
             "selectedColumns": columns}
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))
