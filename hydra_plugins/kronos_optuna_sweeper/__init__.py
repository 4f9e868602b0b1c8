"""kronos_exp's Optuna sweeper for Hydra, on current Optuna: ``hydra/sweeper: kronos_optuna``, and
``hydra/sweeper: optuna`` for configs written for hydra-optuna-sweeper (not installed beside it:
both would claim that name). Its settings are that plugin's (the sampler a ``_target_`` node under
``optuna.samplers.``, ``hydra/sweeper/sampler=<name>`` picks one), with this project's on top:
a stored study (``storage: beside_mlflow``), resumed and shared by its search processes, pruning,
and a Pareto table.

Hydra finds sweepers in the ``hydra_plugins`` namespace package and imports every module in it at
startup, so this package registers its config here and imports nothing heavy: the search space
(space.py) reads Hydra's own override parser; Optuna and the kronos_exp search code are imported
when a sweep starts (sweeper.py).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

BESIDE_MLFLOW = "beside_mlflow"  # storage: SQLite beside the MLflow store (kronos_exp's hparams_search=optuna)

# Each sampler's constructor arguments; a null one is left to Optuna's own default.


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: Optional[bool] = None
    group: bool = False
    warn_independent_sampling: Optional[bool] = None
    constant_liar: bool = True


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"
    scramble: bool = False
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GridSamplerConf:
    """The grid is the search space (``params``): every value of each choice or stepped range."""
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: Optional[int] = None


SAMPLERS = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "cmaes": CmaEsSamplerConf, "qmc": QMCSamplerConf,
            "gp": GPSamplerConf, "nsgaii": NSGAIISamplerConf, "grid": GridSamplerConf}


@dataclass
class KronosOptunaSweeperConf:
    """``hydra.sweeper.*``: hydra-optuna-sweeper's keys and meanings, then this project's."""
    _target_: str = "hydra_plugins.kronos_optuna_sweeper.sweeper.KronosOptunaSweeper"
    _recursive_: bool = False  # the sampler is built by the sweeper, which checks its _target_ first
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}])
    sampler: Any = MISSING  # a _target_ node under optuna.samplers. (hydra/sweeper/sampler=<name>)
    direction: Any = "minimize"  # minimize | maximize | a list (several objectives); kronos_exp: null = the objective's
    storage: Optional[str] = None  # null: in memory; a database URL; beside_mlflow: sqlite beside the MLflow store
    study_name: Optional[str] = None
    n_trials: int = 20  # trials this search runs (a rerun of a stored one counts what it had finished)
    n_jobs: int = 2  # trials launched at once (with a parallel launcher)
    max_failure_rate: float = 0.0  # failed trials over launched ones above this ends the sweep with the error
    search_space: Optional[Dict[str, Any]] = None  # the standard plugin's old form: refused, params replaced it
    custom_search_space: Optional[str] = None  # module.function(cfg, trial) suggesting more parameters
    params: Optional[Dict[str, str]] = None  # key: Hydra sweep syntax (choice(...), tag(log, interval(a, b)), ...)
    # kronos_exp's own:
    pruner: Any = "median"  # median | hyperband | none | a _target_ node under optuna.pruners.
    pruner_startup_trials: int = 2  # median: trials that finish before any is pruned
    pruner_warmup_epochs: int = 0  # epochs a trial trains before it can be pruned
    heartbeat_s: float = 10.0  # a search process refreshes its registration this often; dead after 4 missed


for _sweeper in ("kronos_optuna", "optuna"):
    ConfigStore.instance().store(group="hydra/sweeper", name=_sweeper, node=KronosOptunaSweeperConf,
                                 provider="kronos_exp")
for _name, _node in SAMPLERS.items():
    ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="kronos_exp")
