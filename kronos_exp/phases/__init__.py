"""Training phases, built from conf/phases/*.yaml through ``_target_``: each is a model, a loss,
its datasets and what it builds on."""
from .base import Phase, PhaseContext, Upstream
from .predictor import PredictorPhase
from .tokenizer import TokenizerPhase

__all__ = ["Phase", "PhaseContext", "Upstream", "PredictorPhase", "TokenizerPhase"]
