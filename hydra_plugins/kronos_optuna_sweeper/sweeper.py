"""The sweep: join the shared study as a worker, then ask Optuna for trials, launch each as a
Hydra job (any launcher) that knows its trial through its environment, and tell Optuna what
each job returned, until this search's ``n_trials`` are done.

The study's storage URL reaches the jobs through this process's environment, which every launcher
hands on (the basic launcher runs them here; joblib, submitit and SLURM processes inherit it), never
through an override: Hydra prints a job's overrides and writes them into its folder, and the URL may
hold a database password."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import traceback
from pathlib import Path
from typing import Any, List, NamedTuple, Optional

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class Settings(NamedTuple):
    """What a sweep resolved before its first trial."""
    space: Any
    metrics: list
    directions: list
    url: Optional[str]  # None: in memory
    pruner: Any


class SweepFailed(Exception):
    """More trials of a batch failed than ``max_failure_rate`` allows."""


def _numbers(value: Any) -> Optional[list]:
    """A job's return value as floats (one, or a list or tuple of them); None when it is no number."""
    try:
        return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    except (TypeError, ValueError):
        return None


def _failed(study, trial, reason: str) -> bool:
    """End ``trial`` FAIL with its ``fail_reason`` (a rerun queues again only trials that were
    interrupted, which have none); False where it had ended already."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState
    from kronos_exp.redact import mask_passwords
    from kronos_exp.search.workers import FAIL_REASON_ATTR, tell_if_running

    with contextlib.suppress(UpdateFinishedTrialError):
        trial.set_user_attr(FAIL_REASON_ATTR, mask_passwords(reason)[:2000])
    return tell_if_running(study, trial, state=TrialState.FAIL)


class KronosOptunaSweeper(Sweeper):
    """``hydra/sweeper: kronos_optuna`` (or ``optuna``); settings: see KronosOptunaSweeperConf in
    this package's __init__."""

    def __init__(self, sampler: Any, direction: Any, storage: Optional[str], study_name: Optional[str], n_trials: int,
                 n_jobs: int, max_failure_rate: float, search_space: Any, custom_search_space: Optional[str],
                 params: Optional[DictConfig], pruner: Any, pruner_startup_trials: int, pruner_warmup_epochs: int,
                 heartbeat_s: float) -> None:
        self.sampler, self.direction = _plain(sampler), _plain(direction)
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, max(1, n_jobs)
        self.max_failure_rate, self.search_space = float(max_failure_rate), _plain(search_space)
        self.custom_search_space = custom_search_space
        pruner = _plain(pruner)
        if isinstance(pruner, dict) and pruner.get("_target_") == "optuna.pruners.NopPruner":
            pruner = "none"
        self.pruner = [pruner, pruner_startup_trials, pruner_warmup_epochs]
        self.heartbeat_s = heartbeat_s
        self.params = _plain(params) or {}
        self.config: Optional[DictConfig] = None
        self.job_idx, self.url, self.extend, self.grid_size = 0, None, None, None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _settings(self, arguments: List[str]) -> Settings:
        """The space, objectives, directions, storage and pruner: every setting checked before the study opens."""
        from kronos_exp.errors import ConfigError
        from kronos_exp.search.study import check_directions, check_target, default_storage, make_pruner
        from . import BESIDE_MLFLOW
        from .samplers import custom_search_space
        from .space import search_space

        if self.search_space:
            raise ConfigError("hydra.sweeper.search_space is hydra-optuna-sweeper's deprecated form; give the space "
                              "in hydra.sweeper.params, in Hydra's sweep syntax (x: interval(0, 1))")
        if not (0.0 <= self.max_failure_rate <= 1.0):
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate}; valid: 0.0 to 1.0")
        space = search_space(self.params, arguments)
        check_target("sweeper.sampler", self.sampler, "optuna.samplers")
        self.extend = custom_search_space(self.custom_search_space)
        metrics, directions = self._objectives()
        wanted = check_directions(directions, metrics)
        url = self.storage
        if url == BESIDE_MLFLOW:
            url = default_storage(OmegaConf.select(self.config, "mlflow.tracking_uri"))
        return Settings(space, metrics, wanted, url, make_pruner(*self.pruner))

    def _objectives(self) -> tuple[list, Any]:
        """The objective names and the directions asked for: kronos_exp's (``objective``; direction null:
        each objective's own), or for any other app ``value`` (``value_0``, ... for several)."""
        from kronos_exp.objective import objective_directions, objective_metrics, refusal_of_test_split

        if OmegaConf.select(self.config, "objective", default="<none>") == "<none>" or "phases" not in self.config:
            given = "minimize" if self.direction is None else self.direction
            count = 1 if isinstance(given, str) else len(given)
            return (["value"] if count == 1 else [f"value_{i}" for i in range(count)]), given
        metrics = objective_metrics(self.config)
        refusals = [r for r in map(refusal_of_test_split, metrics) if r is not None]
        if refusals:  # once, before the first trial, not once per trial
            raise refusals[0]
        return metrics, (objective_directions(self.config) if self.direction is None else self.direction)

    def sweep(self, arguments: List[str]) -> None:
        from kronos_exp.errors import ConfigError, error_line
        from kronos_exp.redact import mask_passwords
        from kronos_exp.search.study import name_metrics, open_study
        from kronos_exp.search.workers import Worker
        from .samplers import build_sampler, grid_of

        assert self.config is not None
        try:
            settings = self._settings(arguments)
            study = open_study(self.study_name, settings.url, settings.directions)
            name_metrics(study, settings.metrics)
            worker = Worker.join(study, self.heartbeat_s, settings.url)
        except ConfigError as err:
            raise SystemExit(error_line(str(err))) from None
        try:  # each process of a shared study its own seed: no two sample alike
            study.sampler = build_sampler(self.sampler, worker.index, settings.space.distributions)
        except ConfigError as err:
            worker.leave()
            raise SystemExit(error_line(str(err))) from None
        study.pruner = settings.pruner
        if type(study.sampler).__name__ == "GridSampler":
            self.grid_size = math.prod(len(v) for v in grid_of(settings.space.distributions).values())
        to_run = max(0, self.n_trials - worker.inherited)
        log.info("Study name: %s\nStorage: %s\nSampler: %s\nDirections: %s\nObjectives: %s\nTrials to run: %d of "
                 "n_trials=%d", study.study_name, mask_passwords(settings.url) if settings.url else "in memory",
                 type(study.sampler).__name__, settings.directions, settings.metrics, to_run, self.n_trials)
        if not to_run:
            from kronos_exp.tracking.sweep import nothing_due

            nothing_due(f"study '{study.study_name}' already holds the {worker.inherited} finished trial(s) this "
                        f"search asks for (n_trials={self.n_trials}); raise hydra.sweeper.n_trials to run more, or "
                        "give hydra.sweeper.study_name=<new name>")
        self.url = settings.url
        self._hand_storage_to_jobs(settings.url)
        try:
            self._run_trials(study, settings.space, to_run, worker)
        except SweepFailed as failed:
            raise SystemExit(error_line(str(failed))) from None
        finally:
            worker.leave()
            self._write_results(study, settings.metrics)

    def _hand_storage_to_jobs(self, url: Optional[str]) -> None:
        """The storage URL in this process's environment, which every launcher hands on to the jobs,
        and masked in the sweep's config, which launchers save (submitit's pickles of a job) and
        compose each job's config from (its .hydra/hydra.yaml). A study in memory is this process's
        only: its jobs are not linked to their trials."""
        from kronos_exp.redact import mask_passwords
        from kronos_exp.search.trial import STORAGE_ENV

        if url is None:
            os.environ.pop(STORAGE_ENV, None)
            return
        os.environ[STORAGE_ENV] = url  # before the first launch: joblib's workers start then
        hydra = self.config.hydra
        with read_write(hydra):
            hydra.sweeper.storage = None if self.storage is None else mask_passwords(self.storage)
            hydra.overrides.hydra = [mask_passwords(o) for o in hydra.overrides.hydra]

    def _run_trials(self, study, space, to_run: int, worker) -> None:
        """Batches of ``n_jobs`` trials until ``to_run`` were launched; a batch in which more trials
        failed than ``max_failure_rate`` allows ends the sweep (SweepFailed), each failure printed; so
        does another search process taking this one's over (it took it for dead)."""
        launched = 0
        while launched < to_run and not worker.taken_over:
            if self.grid_size is not None and len(study.trials) >= self.grid_size:
                log.info("the grid is complete: its %d point(s) were tried", self.grid_size)
                return
            size = min(self.n_jobs, to_run - launched)
            trials, batch, failures = [], [], []
            for _ in range(size):
                trial, overrides, failure = self._ask(study, space, worker.id)
                if failure is not None:
                    failures.append(failure)
                else:
                    trials.append(trial)
                    batch.append(overrides)
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx) if batch else []
            self.job_idx += len(batch)
            launched += size
            for trial, ret in zip(trials, returns):
                failure = self._tell(study, trial, ret)
                if failure is not None:
                    failures.append(failure)
            if failures and len(failures) / size > self.max_failure_rate:
                raise SweepFailed(f"{len(failures)} of {size} trial(s) of a batch failed, more than "
                                  f"hydra.sweeper.max_failure_rate={self.max_failure_rate} allows; {failures[0]}")

    def _ask(self, study, space, worker_id: str) -> tuple[Any, Optional[list], Optional[str]]:
        """A new trial and its job's overrides; or, when its values make no valid config (or the
        custom search space hook fails), the trial ended FAIL and why."""
        from kronos_exp.errors import first_line
        from kronos_exp.redact import mask_passwords
        from kronos_exp.search.trial import PRUNER_ATTR, TRIAL_ENV
        from kronos_exp.search.workers import TRIAL_WORKER_ATTR
        from .space import format_value

        trial = study.ask(space.distributions)
        trial.set_user_attr(TRIAL_WORKER_ATTR, worker_id)
        trial.set_user_attr(PRUNER_ATTR, self.pruner)
        for key, value in space.fixed_values.items():  # as hydra-optuna-sweeper: a hook can read them
            trial.set_user_attr(key, mask_passwords(value))  # a study is shared: no URL password in it
        try:
            if self.extend is not None:
                self.extend(self.config, trial)
                overlap = sorted(set(trial.params) & set(space.fixed_values))
                if overlap:
                    raise ValueError(f"the custom search space suggests {overlap}, which the overrides fix")
            overrides = space.overrides(trial.params)
            if self.url is not None:  # a stored study: the job links its run to the trial, reports its epochs
                overrides.append(f"++hydra.job.env_set.{TRIAL_ENV}={format_value(f'{study.study_name}:{trial.number}')}")
            self.validate_batch_is_legal([overrides])
        except Exception as err:  # noqa: BLE001 - whatever these values break is this trial's failure
            reason = mask_passwords(f"trial {trial.number} ({trial.params}): {first_line(err)}")
            log.error("%s; marked FAIL", reason)
            _failed(study, trial, reason)
            return trial, None, reason
        return trial, overrides, None

    @staticmethod
    def _tell(study, trial, ret: JobReturn) -> Optional[str]:
        """What the job returned, as the trial's values; FAIL for a failed job or an undefined
        value. A pruned trial was told so by its job; one another search process ended FAIL (it
        took this one for dead) is told nothing, said so in one line, and the sweep goes on. The
        failure (a job that raised, or returned no number), printed, is returned; a value that is
        not finite (kronos_exp's jobs stopped by a user error) ends FAIL without counting as one,
        as Optuna itself takes it."""
        from optuna.trial import TrialState
        from kronos_exp.errors import first_line
        from kronos_exp.search.workers import taken_over, tell_if_running

        early = (TrialState.PRUNED, TrialState.FAIL)
        ended = {t.number: t.state for t in study.get_trials(deepcopy=False, states=early)}
        if ended.get(trial.number) == TrialState.PRUNED:
            return None
        failure = None
        if ret.status == JobStatus.FAILED:  # the job's own error, with its traceback
            try:
                ret.return_value
            except Exception as err:  # noqa: BLE001 - the job's own error, whatever it is
                failure = f"trial {trial.number} ({trial.params}) failed: {type(err).__name__}: {first_line(err)}"
                log.error("trial %d failed:\n%s", trial.number, "".join(traceback.format_exception(err)).rstrip())
        if trial.number in ended:
            log.warning("%s; its result is not recorded", taken_over(study.study_name, trial.number))
            return failure
        values = _numbers(ret.return_value) if ret.status == JobStatus.COMPLETED else None
        if values is None or len(values) != len(study.directions):
            if failure is None:
                failure = (f"trial {trial.number} ({trial.params}): its job returned {ret.return_value!r}, not "
                           f"{len(study.directions)} number(s)")
                log.error("%s", failure)
            told = _failed(study, trial, failure)
        elif not all(math.isfinite(v) for v in values):
            log.warning("trial %d: its job returned %r; marked FAIL", trial.number, ret.return_value)
            told = _failed(study, trial, f"its job returned {ret.return_value!r} (stopped by the error it printed)")
        else:
            told = tell_if_running(study, trial, values)
        if not told:  # ended between our look and our tell
            log.warning("%s; its result is not recorded", taken_over(study.study_name, trial.number))
        return failure

    def _write_results(self, study, metrics: list[str]) -> None:
        """The best trial (one objective) or the Pareto front (several), logged and written to
        optimization_results.yaml in the sweep folder as hydra-optuna-sweeper writes it (``name:
        optuna``; ``best_params`` and ``best_value``, or ``solutions``, each with its ``params`` and
        ``values``), with kronos_exp's keys beside its own: the study, its objectives, each trial's
        number and the model version its job registered or reused (``models:/<name>/<version>``)."""
        from optuna.trial import TrialState
        from kronos_exp.search.trial import MODEL_VERSION_ATTR

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.warning("study '%s' has no complete trial yet", study.study_name)
            return
        ours = {"study_name": study.study_name, "objectives": metrics}
        if len(study.directions) == 1:
            best = study.best_trial
            version = best.user_attrs.get(MODEL_VERSION_ATTR)
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value, **ours,
                       "best_trial": best.number, **({"best_model_version": version} if version else {})}
            log.info("Best parameters: %s", best.params)
            log.info("Best value: %s", best.value)
            log.info("Best trial: %d of study '%s'%s", best.number, study.study_name,
                     f", model version {version}" if version else "")
        else:
            front, solutions = study.best_trials, []
            log.info("Number of Pareto solutions: %d", len(front))
            for t in front:
                log.info("    Values: %s, Params: %s", t.values, t.params)
                version = t.user_attrs.get(MODEL_VERSION_ATTR)
                solutions.append({"params": t.params, "values": list(t.values), "trial": t.number,
                                  **({"model_version": version} if version else {})})
            results = {"name": "optuna", "solutions": solutions, **ours}
            log.info("Pareto front of study '%s' (%s): trial(s) %s", study.study_name, ", ".join(metrics),
                     ", ".join(str(t.number) for t in front))
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")
