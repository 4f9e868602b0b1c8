"""The Kronos model, written for kronos_exp, checkpoint-compatible with the published weights."""
from .checkpoint import CheckpointError, CheckpointNotFound, resolve_checkpoint_dir
from .forecast import KronosPredictor, generate
from .predictor import Kronos
from .tokenizer import KronosTokenizer

__all__ = ["Kronos", "KronosTokenizer", "KronosPredictor", "generate", "CheckpointError", "CheckpointNotFound",
           "resolve_checkpoint_dir"]
