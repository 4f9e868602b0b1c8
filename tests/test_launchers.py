"""The cluster launcher preset composes (SLURM itself is not here to run it; submitit_local runs
in tests/e2e/test_sweeps.py)."""
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR


def test_slurm_preset_is_submitit_slurm_with_one_gpu_per_job():
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.timeout_min) == (1, 1, 720)
    assert launcher.partition == "gpu"


def test_slurm_jobs_requeue_themselves_a_bounded_number_of_times():
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.kronos_slurm_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.max_num_timeout == 3 and launcher.signal_delay_s == 120


def test_the_no_accounting_note_is_said_once_per_sweep_whatever_its_batches(monkeypatch, caplog):
    """Each batch of a sweep (an Optuna sweeper's, or ``max_batch_size``) is a launch of its own: the
    batches share one job-state watcher, so the note on missing accounting comes once."""
    import subprocess

    from submitit.core import core
    from submitit.slurm import slurm

    from kronos_exp import slurm_jobs

    monkeypatch.setattr(slurm.SlurmJob, "watcher", slurm.SlurmInfoWatcher(delay_s=600))
    no_accounting = subprocess.CompletedProcess([], 1, "", "Slurm accounting storage is disabled")
    monkeypatch.setattr(slurm_jobs.subprocess, "run", lambda *a, **k: no_accounting)
    monkeypatch.setattr(core.subprocess, "check_output", lambda *a, **k: b"")
    caplog.set_level("INFO", logger="kronos_exp.slurm_jobs")
    for batch, job_id in enumerate(["11", "12"]):
        slurm_jobs.watch_jobs()  # each launch
        slurm.SlurmJob.watcher.register_job(job_id)
        slurm.SlurmJob.watcher.update()
        assert slurm.SlurmJob.watcher._make_command()[0] == "squeue", batch
    assert caplog.text.count("SLURM keeps no job accounting here") == 1, caplog.text
