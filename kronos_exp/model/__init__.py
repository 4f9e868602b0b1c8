"""The Kronos model, written for kronos_exp, checkpoint-compatible with the published weights.

Tensors in, tensors out: forecasting DataFrames (KronosPredictor) is kronos_exp.forecasting's."""
from .checkpoint import CheckpointError, CheckpointNotFound, resolve_checkpoint_dir
from .predictor import Kronos
from .tokenizer import KronosTokenizer

__all__ = ["Kronos", "KronosTokenizer", "CheckpointError", "CheckpointNotFound", "resolve_checkpoint_dir"]
