"""The Optuna study a search runs in: stored beside the MLflow store by default (SQLite), so a
killed search continues when rerun and several processes or hosts can share it; a database URL
(``hydra.sweeper.storage``) for a team. Its sampler, pruner and directions come from the
sweeper's settings.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import ConfigError, first_line
from ..outputs import outputs_root
from ..tracking.uris import resolve_tracking_uri, sqlite_path, sqlite_uri

log = logging.getLogger(__name__)

PRUNERS = ("median", "hyperband", "none")  # or a _target_ node under optuna.pruners
DIRECTIONS = ("minimize", "maximize")
TABLE_RACE_TRIES = 5  # opens of a new study database while another process creates its tables


def default_storage(tracking_uri: str | None) -> str:
    """``sqlite:///<folder>/optuna.db``: beside a SQLite MLflow store, else (a tracking server)
    in ./outputs, where the local store would be."""
    database = sqlite_path(resolve_tracking_uri(tracking_uri))
    folder = database.parent if database is not None else outputs_root()
    folder.mkdir(parents=True, exist_ok=True)
    return sqlite_uri((folder / "optuna.db").resolve())


def rdb_storage(url: str):
    """Optuna's database storage for ``url``; SQLite waits for a writer of another process
    instead of failing with "database is locked". Optuna creates its tables on a first open with
    no lock: of two processes opening a new PostgreSQL database at once, the slower one hits the
    other's tables ("already exists", a unique violation) and opens again once they are there."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        for attempt in range(1, TABLE_RACE_TRIES + 1):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except (IntegrityError, ProgrammingError):
                if attempt == TABLE_RACE_TRIES:
                    raise
                time.sleep(0.2 * attempt)
    except Exception as err:  # sqlalchemy: no such driver, host or database
        raise ConfigError(f"hydra.sweeper.storage={url}: cannot open it as an Optuna study database "
                          f"({first_line(err)}); "
                          "give a database URL (sqlite:///path/optuna.db, postgresql://user@host/db, ...) or "
                          "null for SQLite beside the MLflow store") from None


def check_directions(given: Any, metrics: list[str]) -> list[str]:
    """``hydra.sweeper.direction`` as the study's directions: one, or a list for several objectives."""
    listed = [str(d).lower() for d in ([given] if isinstance(given, str) else given)]
    if any(d not in DIRECTIONS for d in listed) or len(listed) != len(metrics):
        raise ConfigError(f"hydra.sweeper.direction={given}; valid: minimize or maximize, one per objective "
                          f"({len(metrics)}: {', '.join(metrics)}), or null for the objectives' own")
    return listed


def check_target(key: str, node: Any, module: str) -> tuple[str, dict[str, Any]]:
    """A ``_target_`` node's class name in ``module`` (optuna.samplers, optuna.pruners) and its
    arguments; any other target is refused: a config is no place to name code to run."""
    import importlib

    target = node.get("_target_") if isinstance(node, dict) else None
    names = [n for n in dir(importlib.import_module(module)) if n[0].isupper()]
    name = target[len(module) + 1:] if isinstance(target, str) and target.startswith(module + ".") else None
    if name not in names:
        raise ConfigError(f"hydra.{key}._target_={target}; valid: {module}.<name> ({', '.join(names)})")
    return name, {k: v for k, v in node.items() if not k.startswith("_")}


def make_pruner(name: Any, startup_trials: int, warmup_epochs: int):
    """``median`` (a trial whose validation loss at an epoch is worse than the median of earlier
    trials' at that epoch stops), ``hyperband``, ``none``, or a ``_target_`` node under
    ``optuna.pruners`` with its constructor's arguments."""
    import optuna

    if isinstance(name, dict):
        cls, kwargs = check_target("sweeper.pruner", name, "optuna.pruners")
        try:
            return getattr(optuna.pruners, cls)(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"hydra.sweeper.pruner: optuna.pruners.{cls}({kwargs}): {first_line(err)}") from None
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"hydra.sweeper.pruner={name}; valid: {', '.join(PRUNERS)}, or a _target_ node "
                      "(optuna.pruners.<name>) with its arguments")


def open_study(name: str | None, url: str | None, study_directions: list[str], sampler=None, pruner=None):
    """Create the study (in memory when ``url`` is None), or load it when it exists: a rerun or
    another process joins it. Its directions must be the ones asked for."""
    import optuna

    study = optuna.create_study(storage=rdb_storage(url) if url else None, study_name=name, sampler=sampler, pruner=pruner,
                                directions=study_directions, load_if_exists=True)
    stored = [d.name.lower() for d in study.directions]
    if stored != study_directions:
        raise ConfigError(f"study '{name}' in {url} has the directions {stored}, and this search asks for "
                          f"{study_directions} (another objective?); give "
                          "this search its own hydra.sweeper.study_name=<name>")
    return study


def name_metrics(study, metrics: list[str]) -> None:
    """Name the study's objectives (what optuna-dashboard shows instead of "Objective 0"); a study
    named otherwise (the same directions, another objective) is refused. Of two processes naming a
    new study at once, the first's names stay: the second is refused if its differ."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    named = study.metric_names
    if named is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(metrics)
        named = study.metric_names
    if named != metrics:
        raise ConfigError(f"study '{study.study_name}' optimises {named}, and this search returns {metrics}; give "
                          "this search its own hydra.sweeper.study_name=<name>")
