"""A sweep job's side of its Optuna trial: the sweeper names the trial in the job's environment
(``KRONOS_EXP_TRIAL=<study>:<number>``, a Hydra ``env_set`` override) and the study's storage URL
in its own (``KRONOS_EXP_TRIAL_STORAGE``, inherited: no override, so a database password in it
is never printed or saved), which reach the job with the basic launcher and in joblib, submitit
or SLURM processes alike. The job links its MLflow run and the trial both ways, reports each
epoch's validation loss, and stops when the pruner says so, or when another search process ended
its trial FAIL (it took this sweep for dead: kronos_exp/search/workers.py), as its result would not
be recorded.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import TrialPruned, TrialTaken
from ..train.distributed import World
from .study import make_pruner, rdb_storage
from .workers import taken_over, tell_if_running

log = logging.getLogger(__name__)

TRIAL_ENV = "KRONOS_EXP_TRIAL"
STORAGE_ENV = "KRONOS_EXP_TRIAL_STORAGE"
RUN_ID_ATTR = "mlflow_run_id"  # on the trial: its job run
MODEL_VERSION_ATTR = "mlflow_model_version"  # on the trial: models:/<name>/<version> its job ended with
PRUNER_ATTR = "kronos_pruner"  # on the trial: [name, startup trials, warm-up epochs] of the sweeper that asked it
TRIAL_TAG, STUDY_TAG = "optuna_trial", "optuna_study"  # on the job run and the versions it registers: its trial


@dataclass
class TrialLink:
    """The trial this job runs (``number`` in study ``study_name`` at ``storage``)."""
    study_name: str
    number: int
    storage: str
    _opened: Any = field(default=None, init=False, repr=False)
    _where: tuple[Any, int] | None = field(default=None, init=False, repr=False)  # (storage, trial id)
    # Hears each epoch's reported loss on rank 0 (the pipeline logs it on the job run: a pruned job's too).
    on_report: Callable[[int, float], None] | None = field(default=None, init=False, repr=False)

    @classmethod
    def current(cls) -> "TrialLink | None":
        """The trial the environment names, or None outside an Optuna sweep."""
        named, storage = os.environ.get(TRIAL_ENV), os.environ.get(STORAGE_ENV)
        if not named or not storage or ":" not in named:
            return None
        study, number = named.rsplit(":", 1)
        return cls(study, int(number), storage)

    def tags(self) -> dict[str, str]:
        """The trial, as the job run and each model version the job registers are tagged with it."""
        return {TRIAL_TAG: str(self.number), STUDY_TAG: self.study_name}

    def _trial(self):
        """The live trial, opened once (rank 0 only: the other ranks never touch the study)."""
        if self._opened is None:
            import optuna

            storage = rdb_storage(self.storage)
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.number)
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      sampler=optuna.samplers.RandomSampler())
            self._opened, self._where = optuna.trial.Trial(study, trial_id), (storage, trial_id)
            name, startup, warmup = self._opened.user_attrs.get(PRUNER_ATTR, ["none", 0, 0])
            study.pruner = make_pruner(name, startup, warmup)
        return self._opened

    def link(self, run_id: str) -> None:
        """Name the job run on the trial; nothing on a trial already ended (its first epoch stops the job)."""
        self._set_attr(RUN_ID_ATTR, run_id)

    def name_version(self, uri: str) -> None:
        """Name on the trial the model version its job ended with (``models:/<name>/<version>``, the
        last phase's, registered or reused), which the study's best trial then points at."""
        self._set_attr(MODEL_VERSION_ATTR, uri)

    def _set_attr(self, key: str, value: str) -> None:
        """A user attribute on the trial; nothing, one warning, on a trial another search process ended."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self._trial().set_user_attr(key, value)
        except UpdateFinishedTrialError:
            log.warning("%s", self.taken())

    def taken(self) -> TrialTaken | None:
        """Why this job stops, when another search process ended its trial; else None."""
        from optuna.trial import TrialState

        self._trial()
        storage, trial_id = self._where
        if storage.get_trial(trial_id).state == TrialState.RUNNING:
            return None
        return TrialTaken(f"{taken_over(self.study_name, self.number)}: its job stops, its result would not be "
                          "recorded")

    def prunable(self) -> bool:
        """Whether epochs are reported: one objective, minimised (a validation loss falls as it
        improves), and a pruner other than ``none``."""
        trial = self._trial()
        pruner = trial.user_attrs.get(PRUNER_ATTR, ["none"])
        return len(trial.study.directions) == 1 and trial.study.direction.name == "MINIMIZE" and pruner[0] != "none"

    def report(self, val_loss: float, epoch: int, may_prune: bool = True) -> TrialPruned | None:
        """Report one epoch's validation loss; what stops the job when the trial is pruned (it is then
        told PRUNED in the study) or was taken (``taken``), else None. A loss that is not finite
        (diverged) prunes at once. After the last epoch (``may_prune`` false) nothing is pruned: the
        training is done, and the job goes on to measure what it trained."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        trial = self._trial()
        try:
            trial.report(val_loss, epoch)
        except UpdateFinishedTrialError:
            return self.taken()
        if not may_prune or (math.isfinite(val_loss) and not trial.should_prune()):
            return None
        if not tell_if_running(trial.study, self.number, state=TrialState.PRUNED):
            return self.taken()
        return TrialPruned(f"pruned: trial {self.number} of study '{self.study_name}' had validation loss "
                           f"{val_loss:.5g} after epoch {epoch + 1} ({trial.user_attrs[PRUNER_ATTR][0]} pruner)")

    def epoch_hook(self, world: World, phase: str) -> Callable[[str, int, float, bool], None]:
        """What the runner calls after each epoch of every phase (and whether it was the phase's
        last): ``phase``'s epochs are reported (on rank 0; every rank hears the verdict), or where
        they are not, only look whether the trial was taken; a pruned or taken trial stops by
        ``TrialPruned``."""
        reported = world.share(self.prunable() if world.is_main else None)
        if not reported:
            log.info("trial %d: epochs are not reported for pruning (several objectives, a maximised one, or "
                     "hydra.sweeper.pruner=none)", self.number)

        def verdict(epoch: int, val_loss: float, last: bool) -> TrialPruned | None:
            if not reported:
                return self.taken()
            if self.on_report is not None:
                self.on_report(epoch, val_loss)
            return self.report(val_loss, epoch, may_prune=not last)

        def hook(name: str, epoch: int, val_loss: float, last: bool) -> None:
            if name != phase:
                return
            stop = world.share(verdict(epoch, val_loss, last) if world.is_main else None)
            if stop is not None:
                raise stop
        return hook
