"""How many CPU threads torch uses in this process (setting ``threads``).

Processes that each spin more threads than their share of the cores slow each other down far more
than their share (on a loaded 2-core machine one-thread processes trained 10-100x faster), and
torch's default is every core of the machine, whatever SLURM granted or other jobs use. So
``threads=null`` picks the count from where the run is:

- ``OMP_NUM_THREADS`` when set (torchrun sets 1 per process): the user's or launcher's choice;
- else one per process under torchrun;
- else the CPUs SLURM granted the job (``SLURM_CPUS_PER_TASK``, else ``SLURM_JOB_CPUS_PER_NODE``),
  or outside SLURM the cores this process may run on (its CPU affinity),
  divided among the jobs a launcher runs at once (joblib's ``n_jobs``, submitit_local's array).
"""
from __future__ import annotations

import os
import re
from typing import Mapping


def _count(value: str | None) -> int | None:
    """The leading positive integer of an environment value (``"4"``, ``"4(x2)"``, ``"4,2"``), or None."""
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def available_cpus(environ: Mapping[str, str]) -> tuple[int, str]:
    """The CPUs this process may use, and where that number comes from."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
        granted = _count(environ.get(name))
        if granted:
            return granted, f"granted by SLURM, {name}={environ[name]}"
    try:
        return len(os.sched_getaffinity(0)), "the cores this process may use"
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1, "the machine's cores"


def resolve_threads(setting: int | None, *, parallel_jobs: int = 1, distributed: bool = False,
                    environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The torch threads for this process and why (the run banner shows both)."""
    environ = os.environ if environ is None else environ
    if setting is not None:
        return int(setting), f"threads={setting}"
    omp = _count(environ.get("OMP_NUM_THREADS"))
    if omp:
        return omp, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    if distributed:
        return 1, "one per torchrun process"
    cpus, source = available_cpus(environ)
    if parallel_jobs > 1:
        return max(1, cpus // parallel_jobs), f"{cpus} CPUs ({source}) shared by {parallel_jobs} parallel jobs"
    return cpus, source

