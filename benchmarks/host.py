"""What the benchmarks say about the machine they ran on: its CPU and the features that decide the
precision ``auto`` picks and the matmul rate (AVX-512 BF16 or AMX: bf16 at several times fp32;
AVX2 only: bf16 emulated, fp32 wins)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_features() -> str:
    flags = set((_cpuinfo("flags") or "").split())
    return " ".join(f for f in FEATURES if f in flags) or "none of " + "/".join(FEATURES)


def describe() -> str:
    """One line: the CPU, its features of those above, and the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()}; {cpu_features()}; {cores} cores"
