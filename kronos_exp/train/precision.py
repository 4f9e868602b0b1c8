"""Device choice and mixed precision, in one place so every phase agrees."""
from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but this machine has no CUDA device; use device=cpu or device=auto")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision=bf16``; plain fp32 otherwise."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def full_precision(device: torch.device):
    """fp32 inside an autocast region: for the frozen tokenizer's encode, so the predictor trains on
    the same tokens that forecasting (which never autocasts) produces."""
    return torch.autocast(device_type=device.type, enabled=False)
