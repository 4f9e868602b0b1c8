"""The quickstart's wall time on a quiet machine and on one loaded to twice its cores (issue 29, item 2).

    python benchmarks/busy_machine.py [--load 2] [--load-session one|same|each] [--fast] [--cap 900]
                                      [--cases quiet-auto busy-auto ...] [--repeats 1] [--extra key=value ...]

Each case runs the README's quickstart, ``python -m kronos_exp phases=both`` (``--fast``: with
``experiment=smoke``, one short epoch per phase), in a fresh temporary folder with its own SQLite
store, and reads the threads the run picked from its banner:

- ``auto``: ``threads=null``, the default, which takes the CPUs other tasks leave free;
- ``old``: ``threads=<cores>``, what ``threads=null`` picked before, whatever the load.

``busy`` cases start ``--load`` x cores busy-loop processes (``while True: pass``) a second before the
run and stop them when it ends, whatever happens (the quiet cases start none). Where Linux shares
the CPUs between sessions first (autogroup, ``/proc/sys/kernel/sched_autogroup_enabled``), where the
loops run decides the run's share:

- ``--load-session one`` (the default): the loops together in a session of their own, as another
  program's processes (a CI job, another user's ``make -j``) load a machine: a session's tasks
  share that session's part of the CPUs;
- ``same``: in this benchmark's session, competing with the run task by task: with N loops on C
  cores a 1-thread run gets C/(N+1) of a core (0.4 at N=4, C=2), so it cannot come within
  3x of a quiet run that is faster than 1.2x its own 1-thread time;
- ``each``: a session each, which shares like ``same``.

A run that passes
``--cap`` seconds is stopped and shown as ">cap". ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are
removed from the runs' environment. Before each case the table shows how many other tasks were
runnable (a quiet case that was not quiet says so). Target: busy-auto within 3x of quiet-auto.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kronos_exp.train.threads import other_runnable_tasks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import describe  # noqa: E402

CASES = ["quiet-auto", "quiet-old", "busy-auto", "busy-old"]
TARGET = 3.0
INF = float("inf")


def fmt(value: float | None, width: int, digits: int) -> str:
    """A number for the table: "-" when unknown, ">cap" for a run stopped at the cap (inf)."""
    text = "-" if value is None else (">cap" if value == INF else f"{value:.{digits}f}")
    return f"{text:>{width}}"


SPIN = "while True: pass"
# One process that forks into `count` spinning processes: one session, one process group.
FORKED = "import os\nfor _ in range({count} - 1):\n    if os.fork() == 0:\n        break\n" + SPIN


def start_load(count: int, session: str) -> list[subprocess.Popen]:
    """``count`` busy loops: in this benchmark's session (``same``), together in one new session
    (``one``: another program's processes), or each in a session of its own (``each``)."""
    if session == "one":
        loops = [subprocess.Popen([sys.executable, "-c", FORKED.format(count=count)], start_new_session=True)]
    else:
        loops = [subprocess.Popen([sys.executable, "-c", SPIN], start_new_session=session == "each")
                 for _ in range(count)]
    time.sleep(1.0)  # their interpreters have started and spin
    return loops


def stop_load(loops: list[subprocess.Popen], session: str) -> None:
    for loop in loops:
        if session == "one":
            os.killpg(loop.pid, signal.SIGKILL)  # the forked loops too
        else:
            loop.kill()
    for loop in loops:
        loop.wait()


def quickstart(overrides: list[str], cap: float) -> tuple[float | None, str]:
    """Seconds of one quickstart run in a fresh folder (None past ``cap``) and its banner's threads line."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "kronos_exp", "phases=both", *overrides], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=cap)
        except subprocess.TimeoutExpired as stopped:
            out = (stopped.stdout or b"") + (stopped.stderr or b"")
            return None, threads_line(out.decode(errors="replace") if isinstance(out, bytes) else out)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"the quickstart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return seconds, threads_line(proc.stdout + proc.stderr)


def threads_line(output: str) -> str:
    match = re.search(r"  threads  (.*)", output)
    return match.group(1).strip() if match else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--load", type=float, default=2.0, help="busy-loop processes per core in the busy cases")
    p.add_argument("--load-session", choices=["one", "same", "each"], default="one",
                   help="the loops in one session of their own, in this benchmark's, or one each")
    p.add_argument("--fast", action="store_true", help="experiment=smoke: one short epoch per phase")
    p.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    p.add_argument("--cap", type=float, default=900.0, help="seconds after which a run is stopped")
    p.add_argument("--repeats", type=int, default=1, help="runs per case; the table shows their median")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its load
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    loops_n = round(args.load * cores)
    overrides = (["experiment=smoke"] if args.fast else []) + args.extra
    print(f"# {describe()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}); "
          f"python -m kronos_exp phases=both {' '.join(overrides)}; busy: {loops_n} busy loops, "
          f"--load-session {args.load_session}", flush=True)
    subprocess.run([sys.executable, "-c", "import kronos_exp.pipeline"], check=True)  # warm the file cache
    rows, seconds = [], {}
    for case in args.cases:
        busy, how = case.split("-")
        setting = ["threads=null"] if how == "auto" else [f"threads={cores}"]
        times, line, others = [], "?", None
        for _ in range(args.repeats):
            loops = start_load(loops_n, args.load_session) if busy == "busy" else []
            try:
                others = other_runnable_tasks(sample_s=0.5)
                took, line = quickstart(setting + overrides, args.cap)
            finally:
                stop_load(loops, args.load_session)
            times.append(took if took is not None else INF)
            if took is None:
                break
        seconds[case] = statistics.median(times)
        rows.append((case, others, line, seconds[case]))
        print(f"{case:<11} {fmt(others, 6, 1)} {fmt(seconds[case], 8, 1)}  threads {line}", flush=True)
    print()
    print(f"{'case':<11} {'others':>6} {'seconds':>8} {'x quiet':>8}  threads (why)")
    for case, others, line, took in rows:
        quiet = seconds.get("quiet-" + case.split("-")[1])
        ratio = fmt(took / quiet if quiet and quiet != INF else None, 8, 2)
        print(f"{case:<11} {fmt(others, 6, 1)} {fmt(took, 8, 1)} {ratio}  {line}")
    if "busy-auto" in seconds and "quiet-auto" in seconds:
        ratio = seconds["busy-auto"] / seconds["quiet-auto"]
        print(f"\nbusy-auto / quiet-auto = {fmt(ratio, 0, 2)} (target <= {TARGET:.0f}): "
              f"{'met' if ratio <= TARGET else 'NOT met'}; a run past --cap {args.cap:.0f} s shows as >cap")


if __name__ == "__main__":
    main()
