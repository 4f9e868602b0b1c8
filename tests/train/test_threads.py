"""The ``threads`` setting's rule (issue 20, item 7): what a run uses when ``threads=null``, from the
environment it runs in (SLURM's grant, torchrun, parallel sweep jobs), and the composed setting."""
from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.hydra_job import parallel_jobs
from kronos_exp.train.threads import available_cpus, resolve_threads

CORES = len(os.sched_getaffinity(0))


def test_a_given_count_is_used_whatever_the_environment():
    assert resolve_threads(3, environ={"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "8"}, parallel_jobs=4) == (
        3, "threads=3")


def test_a_single_run_uses_the_cores_it_may_run_on():
    assert resolve_threads(None, environ={}) == (CORES, "the cores this process may use")


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
    assert resolve_threads(None, environ={"OMP_NUM_THREADS": "junk"}) == resolve_threads(None, environ={})


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
