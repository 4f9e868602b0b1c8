"""Forecasting above the model: KronosPredictor (DataFrames in and out), sampled paths, the MLflow
pyfunc wrapper (forecasting.pyfunc) and the forecast command (``python -m kronos_exp.forecasting``).

It builds on kronos_exp.model and kronos_exp.data; neither imports it."""
from .sampling import sample_paths
from .predictor import KronosPredictor

__all__ = ["KronosPredictor", "sample_paths"]
