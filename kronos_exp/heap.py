"""glibc's malloc, told how this program uses memory (Linux with glibc only; elsewhere nothing
changes).

A training step frees blocks the next step needs again: ``keep_freed_memory``. By default glibc
serves every block above its mmap threshold (128 KB at first, raised as blocks are freed, but a
step frees blocks of many sizes) with fresh pages from mmap and returns them on free, so each
step's activations and gradients start on pages the kernel must fault in and zero again: 18,000
page faults a step at config P (72 MB), a tenth of a CPU step's time. With the mmap threshold at
glibc's largest (32 MB) and the trim threshold at 1 GB, freed blocks stay in the heap and the next
step reuses them.

A file's read frees blocks nothing needs again: ``trim_heap``. Its chunks' arrays are freed into
the heap in many blocks, which glibc keeps resident; without a trim a file's pieces and the series
built from them would both count in the read's peak.
"""
from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit (4 * 1024 * 1024 * sizeof(long))
TRIM_THRESHOLD = 1 << 30


@functools.lru_cache(maxsize=None)
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (musl, macOS and Windows: None)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):  # no confstr, no such name, no such library
        return None


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process (once); whether they were set."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                         TRIM_THRESHOLD))


def trim_heap() -> None:
    """Give the C heap's free pages back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
