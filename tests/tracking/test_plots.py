"""The backtest's equity curves reach the run as an artifact in a real MLflow store."""
import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from kronos_exp.tracking.plots import log_equity_curves


def test_equity_curves_are_logged_on_the_active_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("plots", artifact_location=(tmp_path / "a").as_uri())
    times = np.datetime64("2024-01-01") + np.arange(4) * np.timedelta64(7, "D")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            log_equity_curves({"model": (times, np.array([1.0, 1.02, 0.99, 1.05])),
                               "buy_and_hold": (times, np.array([1.0, 1.01, 1.0, 1.01]))}, "test split")
    finally:
        mlflow.set_tracking_uri(None)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/backtest_equity.png"]
    assert (tmp_path / "a" / run.info.run_id / "artifacts" / "plots" / "backtest_equity.png").stat().st_size > 1000
