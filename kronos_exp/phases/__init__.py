"""Phase runners, built from conf/phases/*.yaml through ``_target_``."""
from .base import Phase, PhaseResult, RunContext
from .predictor import PredictorPhase, TokenizerUnavailable
from .evaluation import EvalPhase
from .tokenizer import TokenizerPhase

__all__ = ["Phase", "PhaseResult", "RunContext", "EvalPhase", "PredictorPhase", "TokenizerPhase", "TokenizerUnavailable"]
