"""Forecasting above the model: KronosPredictor (DataFrames in and out), sampled paths, the MLflow
pyfunc package (forecasting.pyfunc writes it, forecasting.packaged reads it as data,
forecasting.served_model is the installed code that serves it), the forecast command
(``python -m kronos_exp.forecasting``) and its ``verify`` of a registered version's files.

It builds on kronos_exp.model and kronos_exp.data; neither imports it."""
from .sampling import sample_paths
from .predictor import KronosPredictor

__all__ = ["KronosPredictor", "sample_paths"]
