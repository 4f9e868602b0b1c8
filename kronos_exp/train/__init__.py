"""Training pieces shared by the phases: the loop, device and precision."""
from .batches import Batches
from .loop import FitResult, FitSettings, evaluate, fit
from .precision import autocast, check_precision, resolve_device, resolve_precision

__all__ = ["Batches", "FitResult", "FitSettings", "evaluate", "fit", "autocast", "check_precision", "resolve_device", "resolve_precision"]
