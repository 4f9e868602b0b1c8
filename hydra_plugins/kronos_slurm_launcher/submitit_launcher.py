"""``SlurmLauncher``: hydra-submitit-launcher's SLURM launcher whose jobs requeue themselves when SLURM
stops them, and whose status polls work without accounting (kronos_exp/slurm_jobs.py)."""
from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """``launch`` (the sweep's process) polls job states through squeue where sacct has nothing, and
    takes a job SLURM ended without a result (scancel) as a job that did not finish;
    ``__call__`` (each SLURM job) requeues the job when SLURM's warning stopped it."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from kronos_exp.slurm_jobs import settle, unfinished_jobs_returned, watch_jobs

        watch_jobs()
        with unfinished_jobs_returned():
            returns = super().launch(job_overrides, initial_job_idx)
        return [settle(self, returned, overrides, initial_job_idx + i)
                for i, (returned, overrides) in enumerate(zip(returns, job_overrides))]

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Any) -> JobReturn:
        from kronos_exp.slurm_jobs import run_requeueable

        def run() -> JobReturn:  # (submitit may pickle this class by value: no super() on its name)
            return submitit_launcher.SlurmLauncher.__call__(self, sweep_overrides, job_dir_key, job_num, job_id,
                                                            singleton_state)

        return run_requeueable(self, run, sweep_overrides, job_num)
