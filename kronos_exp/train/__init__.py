"""Training pieces shared by the phases: the loop, device and precision."""
from .loop import FitResult, FitSettings, evaluate, fit
from .precision import autocast, check_precision, resolve_device

__all__ = ["FitResult", "FitSettings", "evaluate", "fit", "autocast", "check_precision", "resolve_device"]
