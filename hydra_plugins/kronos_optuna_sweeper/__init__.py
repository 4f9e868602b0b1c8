"""kronos_exp's Optuna sweeper for Hydra (``hydra/sweeper: kronos_optuna``), on current Optuna.

Hydra finds sweepers in the ``hydra_plugins`` namespace package and imports every module in it at
startup, so this package registers its config here and imports nothing heavy: the search space
(space.py) reads Hydra's own override parser; Optuna and the kronos_exp search code are imported
when a sweep starts (sweeper.py).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp")


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random | cmaes | qmc | gp
    seed: Optional[int] = None


@dataclass
class KronosOptunaSweeperConf:
    """``hydra.sweeper.*``: what a search asks for. The study lives in ``storage`` (null: SQLite
    beside the MLflow store) under ``study_name``; a rerun continues it, processes started together
    share it (kronos_exp/search/workers.py)."""
    _target_: str = "hydra_plugins.kronos_optuna_sweeper.sweeper.KronosOptunaSweeper"
    # hydra/sweeper/sampler=<name> picks a sampler (as with Hydra's own Optuna plugin); or sampler.name=<name>
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}])
    sampler: SamplerConf = field(default_factory=SamplerConf)
    direction: Any = None  # minimize | maximize | a list (several objectives); null = from the objective's metric
    study_name: str = "kronos_exp"
    storage: Optional[str] = None  # a database URL; null = sqlite:///<beside the MLflow store>/optuna.db
    n_trials: int = 6  # trials this search runs (a rerun of a killed one counts what it had finished)
    n_jobs: int = 1  # trials launched at once (with a parallel launcher)
    pruner: str = "median"  # median | hyperband | none
    pruner_startup_trials: int = 2  # median: trials that finish before any is pruned
    pruner_warmup_epochs: int = 0  # epochs a trial trains before it can be pruned
    heartbeat_s: float = 10.0  # a search process refreshes its registration this often; dead after 4 missed
    params: Optional[Dict[str, str]] = None  # key: Hydra sweep syntax (choice(...), tag(log, interval(a, b)), ...)


ConfigStore.instance().store(group="hydra/sweeper", name="kronos_optuna", node=KronosOptunaSweeperConf,
                             provider="kronos_exp")
for _name in SAMPLERS:
    ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=SamplerConf(name=_name),
                                 provider="kronos_exp")
