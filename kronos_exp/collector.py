"""Python's cyclic garbage collector around the program's start and exit.

Importing torch, MLflow and Hydra allocates about a million objects that live as long as the
process. The collector's passes over them while they are created cost about 2 s of every run and
trial, and its passes at exit another 1.8 s, and free nothing. So ``python -m kronos_exp`` turns
it off before it imports (``pause_for_imports``), and once the imports are done (a run: the
pipeline is imported; a sweep: its callbacks have started) moves what they left to the permanent
generation, which is never scanned, and turns it back on (``imports_done``). The last exit handler
freezes everything again, so teardown skips those passes; the OS takes the memory back.
"""
from __future__ import annotations

import atexit
import gc

_resume: bool | None = None  # whether to turn the collector back on; None: this process never paused it


def pause_for_imports() -> None:
    """Collector off until ``imports_done``; registered first, the exit freeze runs last of the exit
    handlers (after MLflow's flush and logging's)."""
    global _resume
    _resume = gc.isenabled()
    gc.disable()
    atexit.register(gc.freeze)


def imports_done() -> None:
    """Freeze what the imports left, once per process (what later jobs of a sweep in this process
    leave is the collector's to free), and collect again."""
    if not gc.get_freeze_count():
        gc.freeze()
    resume()


def resume() -> None:
    """The collector back on if this process paused it (a caller that runs the CLI in-process, where
    --help or a bad override ends before the run, gets it back too)."""
    if _resume:
        gc.enable()
