"""How the Optuna sweeper hands its study's storage to the jobs (issue 27, item 7): through the
environment, which every launcher hands on, while the sweep's config, which launchers save
(submitit pickles a job with it) and compose each job's config from, keeps only the masked URL.
A database URL that no test can connect to, so the sweeper's step is called by itself."""
from __future__ import annotations

import os

from hydra.utils import instantiate
from omegaconf import OmegaConf

from harness import compose
from kronos_exp.search.trial import STORAGE_ENV

URL = "postgresql://user:s3cret@db.internal:5432/optuna"


def test_the_jobs_get_the_storage_from_the_environment_and_the_sweeps_config_only_its_masked_url(monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, "an earlier sweep's")  # (put back after the test)
    cfg = compose("hparams_search=optuna", f"hydra.sweeper.storage={URL}")
    sweeper = instantiate(cfg.hydra.sweeper)
    sweeper.config = cfg
    sweeper._hand_storage_to_jobs(URL)
    assert os.environ[STORAGE_ENV] == URL
    assert cfg.hydra.sweeper.storage == "postgresql://user:***@db.internal:5432/optuna"
    assert "hydra.sweeper.storage=postgresql://user:***@db.internal:5432/optuna" in cfg.hydra.overrides.hydra
    assert "s3cret" not in OmegaConf.to_yaml(cfg)
