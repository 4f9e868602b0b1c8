"""The sweep: join the shared study as a worker, then ask Optuna for trials, launch each as a
Hydra job (any launcher) that knows its trial through its environment, and tell Optuna what
each job returned, until this search's ``n_trials`` are done.

The study's storage URL reaches the jobs through this process's environment, which every launcher
hands on (the basic launcher runs them here; joblib, submitit and SLURM processes inherit it), never
through an override: Hydra prints a job's overrides and writes them into its folder, and the URL may
hold a database password."""
from __future__ import annotations

import logging
import math
import os
import traceback
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write

log = logging.getLogger(__name__)


class KronosOptunaSweeper(Sweeper):
    """``hydra/sweeper: kronos_optuna`` (conf/hparams_search/optuna.yaml); settings: see
    KronosOptunaSweeperConf in this package's __init__."""

    def __init__(self, sampler: DictConfig, direction: Any, study_name: str, storage: Optional[str], n_trials: int,
                 n_jobs: int, pruner: str, pruner_startup_trials: int, pruner_warmup_epochs: int, heartbeat_s: float,
                 params: Optional[DictConfig]) -> None:
        self.sampler = OmegaConf.to_container(sampler) if isinstance(sampler, DictConfig) else dict(sampler)
        self.direction = OmegaConf.to_container(direction) if isinstance(direction, DictConfig) or \
            OmegaConf.is_list(direction) else direction
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, max(1, n_jobs)
        self.pruner = [pruner, pruner_startup_trials, pruner_warmup_epochs]
        self.heartbeat_s = heartbeat_s
        self.params = OmegaConf.to_container(params) if params is not None else {}
        self.config: Optional[DictConfig] = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        from kronos_exp.objective import objective_directions, objective_metrics, refusal_of_test_split
        from kronos_exp.errors import ConfigError, error_line
        from .space import search_space
        from kronos_exp.redact import mask_passwords
        from kronos_exp.search.study import check_directions, default_storage, make_pruner, make_sampler, open_study
        from kronos_exp.search.workers import Worker

        assert self.config is not None
        try:
            space = search_space(self.params, arguments)
            metrics = objective_metrics(self.config)
            refusals = [r for r in map(refusal_of_test_split, metrics) if r is not None]
            if refusals:  # once, before the first trial, not once per trial
                raise refusals[0]
            wanted = (objective_directions(self.config) if self.direction is None
                      else check_directions(self.direction, metrics))
            url = self.storage or default_storage(OmegaConf.select(self.config, "mlflow.tracking_uri"))
            pruner = make_pruner(*self.pruner)
            make_sampler(self.sampler.get("name", "tpe"), None)  # a name it knows, before joining the study
            study = open_study(self.study_name, url, wanted)
        except ConfigError as err:
            raise SystemExit(error_line(str(err))) from None
        worker = Worker.join(study, self.heartbeat_s)
        seed = self.sampler.get("seed")  # each process of a shared study its own: no two sample alike
        study.sampler = make_sampler(self.sampler.get("name", "tpe"), None if seed is None else int(seed) + worker.index)
        study.pruner = pruner
        to_run = max(0, self.n_trials - worker.inherited)
        log.info("Study name: %s\nStorage: %s\nSampler: %s\nDirections: %s\nObjectives: %s\nTrials to run: %d of "
                 "n_trials=%d", study.study_name, mask_passwords(url), type(study.sampler).__name__, wanted, metrics,
                 to_run, self.n_trials)
        if not to_run:
            from kronos_exp.tracking.sweep import nothing_due

            nothing_due(f"study '{study.study_name}' already holds the {worker.inherited} finished trial(s) this "
                        f"search asks for (n_trials={self.n_trials}); raise hydra.sweeper.n_trials to run more, or "
                        "give hydra.sweeper.study_name=<new name>")
        self._hand_storage_to_jobs(url)
        try:
            self._run_trials(study, space, to_run, worker.id)
        finally:
            worker.leave()
        self._write_results(study, metrics)

    def _hand_storage_to_jobs(self, url: str) -> None:
        """The storage URL in this process's environment, which every launcher hands on to the jobs,
        and masked in the sweep's config, which launchers save (submitit's pickles of a job) and
        compose each job's config from (its .hydra/hydra.yaml)."""
        from kronos_exp.redact import mask_passwords
        from kronos_exp.search.trial import STORAGE_ENV

        os.environ[STORAGE_ENV] = url  # before the first launch: joblib's workers start then
        hydra = self.config.hydra
        with read_write(hydra):
            hydra.sweeper.storage = None if self.storage is None else mask_passwords(self.storage)
            hydra.overrides.hydra = [mask_passwords(o) for o in hydra.overrides.hydra]

    def _run_trials(self, study, space, to_run: int, worker_id: str) -> None:
        from .space import format_value
        from kronos_exp.search.trial import PRUNER_ATTR, TRIAL_ENV
        from kronos_exp.search.workers import TRIAL_WORKER_ATTR

        launched = 0
        while launched < to_run:
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, to_run - launched))]
            batch = []
            for trial in trials:
                trial.set_user_attr(TRIAL_WORKER_ATTR, worker_id)
                trial.set_user_attr(PRUNER_ATTR, self.pruner)
                batch.append([*space.overrides(trial.params),
                              f"++hydra.job.env_set.{TRIAL_ENV}={format_value(f'{study.study_name}:{trial.number}')}"])
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
            launched += len(batch)
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret)

    @staticmethod
    def _tell(study, trial, ret: JobReturn) -> None:
        """What the job returned, as the trial's values; FAIL for a failed job or an undefined
        value. A pruned trial was told so by its job; one another search process ended FAIL (it
        took this one for dead) is told nothing, said so in one line, and the sweep goes on."""
        from optuna.trial import TrialState
        from kronos_exp.search.workers import taken_over, tell_if_running

        early = (TrialState.PRUNED, TrialState.FAIL)
        ended = {t.number: t.state for t in study.get_trials(deepcopy=False, states=early)}
        if ended.get(trial.number) == TrialState.PRUNED:
            return
        if ret.status == JobStatus.FAILED:  # an exception no user caused: show it, as a one-job run would
            try:
                ret.return_value
            except Exception as err:  # noqa: BLE001 - the job's own error, whatever it is
                log.error("trial %d failed:\n%s", trial.number, "".join(traceback.format_exception(err)).rstrip())
        if trial.number in ended:
            log.warning("%s; its result is not recorded", taken_over(study.study_name, trial.number))
            return
        value = ret.return_value if ret.status == JobStatus.COMPLETED else None
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if any(v is None or not math.isfinite(float(v)) for v in values) or len(values) != len(study.directions):
            log.warning("trial %d: its job returned %r; marked FAIL", trial.number,
                        value if ret.status == JobStatus.COMPLETED else "an error")
            told = tell_if_running(study, trial, state=TrialState.FAIL)
        else:
            told = tell_if_running(study, trial, [float(v) for v in values])
        if not told:  # ended between our look and our tell
            log.warning("%s; its result is not recorded", taken_over(study.study_name, trial.number))

    def _write_results(self, study, metrics: list[str]) -> None:
        """The best trial (one objective) or the Pareto front (several), logged and written to
        optimization_results.yaml in the sweep folder."""
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.warning("study '%s' has no complete trial yet", study.study_name)
            return
        if len(study.directions) == 1:
            best = study.best_trial
            results = {"name": study.study_name, "best_params": best.params, "best_value": best.value,
                       "best_trial": best.number}
            log.info("Best parameters: %s\nBest value: %s (trial %d)", best.params, best.value, best.number)
        else:
            front = [{"trial": t.number, "params": t.params, "values": dict(zip(metrics, t.values))}
                     for t in study.best_trials]
            results = {"name": study.study_name, "objectives": metrics, "pareto_front": front}
            log.info("Pareto front (%s): %s", ", ".join(metrics), front)
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")
