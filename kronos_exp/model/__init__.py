"""The Kronos model, written for kronos_exp, checkpoint-compatible with the published weights.

Tensors in, tensors out: forecasting DataFrames (KronosPredictor) is kronos_exp.forecasting's."""
from .checkpoint import CheckpointError, CheckpointNotFound, resolve_checkpoint_dir
from .predictor import Kronos
from .tokenizer import KronosTokenizer

__all__ = ["Kronos", "KronosTokenizer", "CheckpointError", "CheckpointNotFound", "resolve_checkpoint_dir"]


def __getattr__(name):
    """The published API names its pandas adapter beside the networks
    (`from model import Kronos, KronosTokenizer, KronosPredictor`), and scripts written for it,
    the shared parity check among them, import it from here. It is looked up on first use, so
    importing model/ still loads neither pandas nor data/: the one arrow up the layers, declared
    in pyproject's import contracts."""
    if name == "KronosPredictor":
        from kronos_exp.forecasting import KronosPredictor

        return KronosPredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
