"""Device choice and mixed precision, in one place so every phase agrees.

``auto`` picks bf16 where the hardware runs it fast (CUDA with bf16 support; CPUs with
AVX512-BF16 or AMX) and fp32 elsewhere. fp16 needs CUDA and a gradient scaler. Whatever the
precision, parameters, optimizer state and losses stay fp32: autocast lowers only the matmuls.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but this machine has no CUDA device; use device=cpu or device=auto")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run several times faster than fp32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    return torch.backends.cpu.get_cpu_capability().startswith("AMX")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run trains in: ``auto`` resolved, and combinations the device lacks refused."""
    check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision=fp16 needs a CUDA device (device is {device}); use precision=bf16, fp32 or auto")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast to bf16/fp16 for those precisions (``auto`` resolved first); plain fp32 otherwise."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def full_precision(device: torch.device):
    """A block that runs in fp32 even inside an autocast region (the frozen tokenizer's encoding)."""
    return torch.autocast(device_type=device.type, enabled=False)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (whose gradients underflow); a pass-through for the others."""
    enabled = resolve_precision(precision, device) == "fp16"
    return torch.amp.GradScaler(device.type, enabled=enabled)
