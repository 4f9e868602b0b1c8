"""The ``threads`` setting's rule (issue 20, item 7): what a run uses when ``threads=null``, from the
environment it runs in (SLURM's grant, torchrun, parallel sweep jobs), and the composed setting; on a
busy machine, the CPUs other tasks leave free (issue 29, item 2)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.hydra_job import parallel_jobs
from kronos_exp.train.threads import available_cpus, busy_cpus, other_runnable_tasks, resolve_threads

CORES = len(os.sched_getaffinity(0))


def test_a_given_count_is_used_whatever_the_environment():
    assert resolve_threads(3, environ={"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "8"}, parallel_jobs=4) == (
        3, "threads=3")


def test_a_single_run_uses_the_cores_it_may_run_on():
    assert resolve_threads(None, environ={}, busy=lambda cpus: 0.0) == (CORES, "the cores this process may use")


@pytest.mark.parametrize("environ, expected", [
    ({"SLURM_CPUS_PER_TASK": "1", "SLURM_JOB_CPUS_PER_NODE": "2"}, 1),  # -c 1 on a node that gave the job 2
    ({"SLURM_JOB_CPUS_PER_NODE": "6(x2)"}, 6),  # no --cpus-per-task: the job's CPUs on this node
    ({"SLURM_JOB_CPUS_PER_NODE": "4,2"}, 4),
])
def test_a_slurm_job_uses_the_cpus_slurm_granted(environ, expected):
    count, why = resolve_threads(None, environ=environ)
    assert count == expected and why.startswith("granted by SLURM")


def test_parallel_jobs_share_the_cpus():
    assert resolve_threads(None, environ={"SLURM_CPUS_PER_TASK": "8"}, parallel_jobs=3)[0] == 2
    assert resolve_threads(None, environ={"SLURM_CPUS_PER_TASK": "2"}, parallel_jobs=4)[0] == 1  # never 0


def test_torchrun_processes_take_one_thread_each_or_what_omp_num_threads_says():
    assert resolve_threads(None, environ={}, distributed=True) == (1, "one per torchrun process")
    assert resolve_threads(None, environ={"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS=1")  # torchrun sets it
    quiet = lambda cpus: 0.0  # noqa: E731
    assert resolve_threads(None, environ={"OMP_NUM_THREADS": "junk"}, busy=quiet) == resolve_threads(
        None, environ={}, busy=quiet)


def test_without_slurm_the_affinity_counts():
    assert available_cpus({"SLURM_CPUS_PER_TASK": ""})[0] == CORES


def _launcher(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", list(overrides), return_hydra_config=True)
    return cfg.threads, cfg.hydra.launcher


def test_the_setting_defaults_to_automatic_and_launchers_say_how_many_jobs_run_at_once():
    threads, basic = _launcher()
    assert threads is None and parallel_jobs(basic) == 1
    cores = os.cpu_count()
    assert parallel_jobs(_launcher("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")[1]) == 2
    assert parallel_jobs(_launcher("hydra/launcher=joblib", "hydra.launcher.n_jobs=-1")[1]) == cores
    assert parallel_jobs(_launcher("hydra/launcher=submitit_local")[1]) == cores  # every job at once, one core each
    local = _launcher("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=2")[1]
    assert parallel_jobs(local) == max(1, cores // 2)
    assert parallel_jobs(_launcher("hydra/launcher=slurm")[1]) == 1  # each SLURM job has CPUs of its own


# --- A busy machine (issue 29, item 2): threads=null takes the CPUs other tasks leave free. ---------------------

def _refuse(cpus):
    raise AssertionError("the machine's load was consulted for a count that does not come from its cores")


@pytest.fixture
def eight_cores(monkeypatch):
    """A process that may run on 8 of a 16-CPU machine's cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 16)


def test_a_busy_machine_gets_fewer_threads_and_the_banner_says_what_to_set():
    count, why = resolve_threads(None, environ={}, busy=lambda cpus: 5.0)
    assert count == 1
    assert why == f"{CORES} CPUs (the cores this process may use), 5 other runnable tasks; set threads=N to override"


def test_the_threads_are_the_cpus_left_free_never_fewer_than_one(eight_cores):
    assert resolve_threads(None, environ={}, busy=lambda cpus: 3.0)[0] == 5
    assert resolve_threads(None, environ={}, busy=lambda cpus: 2.6)[0] == 5  # 2.6 tasks on average: 3
    assert resolve_threads(None, environ={}, busy=lambda cpus: 30.0)[0] == 1
    assert resolve_threads(None, environ={}, busy=lambda cpus: 1.0)[1].endswith(", 1 other runnable task; "
                                                                                 "set threads=N to override")


def test_a_quiet_machine_keeps_every_core(eight_cores):
    assert resolve_threads(None, environ={}, busy=lambda cpus: 0.0) == (8, "the cores this process may use")
    assert resolve_threads(None, environ={}, busy=lambda cpus: 0.4) == (8, "the cores this process may use")
    assert resolve_threads(None, environ={}, busy=lambda cpus: None) == (8, "the cores this process may use")


def test_parallel_jobs_take_their_share_or_what_is_free_whichever_is_less(eight_cores):
    assert resolve_threads(None, environ={}, parallel_jobs=2, busy=lambda cpus: 2.0) == (
        4, "8 CPUs (the cores this process may use) shared by 2 parallel jobs")
    count, why = resolve_threads(None, environ={}, parallel_jobs=2, busy=lambda cpus: 6.0)
    assert count == 2 and why == ("8 CPUs (the cores this process may use) shared by 2 parallel jobs, "
                                  "6 other runnable tasks; set threads=N to override")


def test_explicit_counts_are_kept_whatever_the_load():
    assert resolve_threads(4, environ={}, busy=_refuse) == (4, "threads=4")
    assert resolve_threads(None, environ={"OMP_NUM_THREADS": "2"}, busy=_refuse) == (2, "OMP_NUM_THREADS=2")
    assert resolve_threads(None, environ={}, distributed=True, busy=_refuse) == (1, "one per torchrun process")
    # SLURM's grant is the job's own CPUs; the node's other tasks run on the other jobs' CPUs.
    assert resolve_threads(None, environ={"SLURM_CPUS_PER_TASK": "2"}, busy=_refuse)[0] == 2


def _fake_proc(root, running: int, own_states: str):
    (root / "loadavg").write_text(f"7.50 6.10 5.00 {running}/412 98765\n")
    for tid, state in enumerate(own_states, start=100):
        task = root / "self" / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "stat").write_text(f"{tid} (pt_main) thread) {state} 1 2 3 4 5\n")  # a name may hold ') '
    return root


def test_the_measure_is_the_runnable_tasks_less_this_process_own(tmp_path):
    proc = _fake_proc(tmp_path, running=7, own_states="RSRS")
    assert other_runnable_tasks(proc=proc, sample_s=0, reads=3) == 5.0


def test_on_part_of_the_machine_the_others_count_in_proportion(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    proc = _fake_proc(tmp_path, running=17, own_states="R")
    assert busy_cpus(4, proc=proc, sample_s=0, reads=1) == 4.0  # 16 others over 16 CPUs, 4 of them ours


def test_without_proc_the_load_average_stands_in_or_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (3.25, 2.0, 1.0))
    assert other_runnable_tasks(proc=tmp_path / "absent", sample_s=0) == 3.25

    def no_loadavg():
        raise OSError("no load average")
    monkeypatch.setattr(os, "getloadavg", no_loadavg)
    assert other_runnable_tasks(proc=tmp_path / "absent", sample_s=0) is None


def test_a_really_loaded_machine_gets_fewer_threads_than_its_cores():
    if CORES < 2:
        pytest.skip("one core: there is no fewer")
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * CORES)]
    try:
        time.sleep(0.5)  # the loops' interpreters have started
        count, why = resolve_threads(None, environ={})
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()
    assert count < CORES and "set threads=N to override" in why, why
