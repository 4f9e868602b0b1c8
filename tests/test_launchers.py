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
