"""How many CPU threads torch uses in this process (setting ``threads``).

Processes that each spin more threads than their share of the cores slow each other down far more
than their share (on a loaded 2-core machine one-thread processes trained 10-100x faster), and
torch's default is every core of the machine, whatever SLURM granted or other jobs use. So
``threads=null`` picks the count from where the run is:

- ``OMP_NUM_THREADS`` when set (torchrun sets 1 per process): the user's or launcher's choice;
- else one per process under torchrun;
- else the CPUs SLURM granted the job (``SLURM_CPUS_PER_TASK``, else ``SLURM_JOB_CPUS_PER_NODE``),
  or outside SLURM the cores this process may run on (its CPU affinity),
  divided among the jobs a launcher runs at once (joblib's ``n_jobs``, submitit_local's array);
- where the count comes from the cores (not from SLURM), no more than the CPUs other tasks leave
  free, at least one: on a 2-core machine loaded to 7-11 the quickstart ran 23x slower on 2 threads
  than on 1 (issue 29). The busy count is the runnable tasks of other processes, sampled over 0.2 s
  from ``/proc/loadavg`` (the 1-minute load average lags by minutes), in proportion where this
  process may use only some of the machine's CPUs; without ``/proc`` (macOS), the 1-minute load
  average. A SLURM grant is kept: those CPUs are the job's own, and the node's other runnable
  tasks are mostly other jobs on theirs, which a node-wide count cannot tell apart.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable, Mapping

PROC = Path("/proc")
GRANTED = "granted by SLURM"


def _count(value: str | None) -> int | None:
    """The leading positive integer of an environment value (``"4"``, ``"4(x2)"``, ``"4,2"``), or None."""
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def available_cpus(environ: Mapping[str, str]) -> tuple[int, str]:
    """The CPUs this process may use, and where that number comes from."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
        granted = _count(environ.get(name))
        if granted:
            return granted, f"{GRANTED}, {name}={environ[name]}"
    try:
        return len(os.sched_getaffinity(0)), "the cores this process may use"
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1, "the machine's cores"


def _own_runnable(proc: Path) -> int:
    """This process's threads that are running or waiting for a CPU (state R), itself at least."""
    running = 0
    for stat in (proc / "self" / "task").glob("*/stat"):
        try:
            running += stat.read_text().rpartition(")")[2].split()[0] == "R"  # the name may hold ") "
        except (OSError, IndexError):  # a thread that ended meanwhile
            pass
    return max(1, running)


def other_runnable_tasks(*, proc: Path = PROC, sample_s: float = 0.2, reads: int = 10) -> float | None:
    """Tasks of other processes running or waiting for a CPU, machine-wide: the mean over ``reads``
    readings of /proc/loadavg's running count (which counts this process's runnable threads too)
    spread over ``sample_s``; where there is no /proc, the 1-minute load average; None without either."""
    seen = []
    for i in range(reads):
        try:
            running = int((proc / "loadavg").read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            break
        seen.append(max(0, running - _own_runnable(proc)))
        if i < reads - 1:
            time.sleep(sample_s / max(1, reads - 1))
    if seen:
        return sum(seen) / len(seen)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return None


def busy_cpus(cpus: int, **sample) -> float | None:
    """How many of the ``cpus`` this process may use other tasks keep busy: the machine's other
    runnable tasks in proportion to the share of its CPUs that ``cpus`` is; None where unknown."""
    others = other_runnable_tasks(**sample)
    return None if others is None else others * cpus / max(cpus, os.cpu_count() or cpus)


def resolve_threads(setting: int | None, *, parallel_jobs: int = 1, distributed: bool = False,
                    environ: Mapping[str, str] | None = None,
                    busy: Callable[[int], float | None] = busy_cpus) -> tuple[int, str]:
    """The torch threads for this process and why (the run banner shows both). ``busy(cpus)`` says
    how many of the CPUs this process may use other tasks keep busy (tests give their own)."""
    environ = os.environ if environ is None else environ
    if setting is not None:
        return int(setting), f"threads={setting}"
    omp = _count(environ.get("OMP_NUM_THREADS"))
    if omp:
        return omp, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    if distributed:
        return 1, "one per torchrun process"
    cpus, source = available_cpus(environ)
    threads, why = cpus, source
    if parallel_jobs > 1:
        threads, why = max(1, cpus // parallel_jobs), f"{cpus} CPUs ({source}) shared by {parallel_jobs} parallel jobs"
    if source.startswith(GRANTED):  # the job's own CPUs
        return threads, why
    others = busy(cpus)
    others = 0 if others is None else int(others + 0.5)  # round half up
    if cpus - others >= threads:
        return threads, why
    what = why if parallel_jobs > 1 else f"{cpus} CPUs ({source})"
    return max(1, cpus - others), (f"{what}, {others} other runnable task{'s' if others != 1 else ''}; "
                                   f"set threads=N to override")

