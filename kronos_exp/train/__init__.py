"""Training pieces shared by the phases: the loop, device and precision."""
from .loop import FitResult, FitSettings, evaluate, fit
from .precision import autocast, resolve_device

__all__ = ["FitResult", "FitSettings", "evaluate", "fit", "autocast", "resolve_device"]
