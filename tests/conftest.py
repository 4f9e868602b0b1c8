"""Suite-wide settings: no MLflow telemetry, one torch thread layout for every test."""
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
