"""The errors a user can cause and fix (bad data, missing checkpoints, wrong settings, a lost
tracking server, a full or read-only disk): the CLI prints their message alone, without a
traceback. Anything else (a bug, an error from inside torch or numpy) keeps its traceback.

This module imports nothing of the package at load time, so every layer can raise ``ConfigError``.
"""
from __future__ import annotations

import errno


class ConfigError(ValueError):
    """A setting that cannot work (an unknown device, mismatched bit widths, ...). The message
    names the key, its value and what would be valid."""


class TrainingFailed(RuntimeError):
    """Training ran but produced nothing worth keeping (a loss that was never finite); the message
    says which settings to change."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The error types of every layer whose message is meant for the user. Imported on first use so
    that those layers can import ConfigError from here without a cycle."""
    from .data import DataError
    from .model.checkpoint import CheckpointError, CheckpointNotFound
    from .phases.predictor import TokenizerUnavailable
    from .tracking import TrackingUnavailable

    return (DataError, CheckpointError, CheckpointNotFound, TokenizerUnavailable, TrackingUnavailable, ConfigError,
            TrainingFailed)


def __getattr__(name: str):
    if name == "USER_ERRORS":
        return user_errors()
    raise AttributeError(name)


# Write failures the user fixes outside the program: a full disk, a quota, a read-only or foreign folder.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def user_message(err: BaseException) -> str | None:
    """The line the CLI prints for an error the user can fix; None for a bug (shown with its traceback)."""
    if isinstance(err, user_errors()):
        return str(err)
    if not isinstance(err, OSError) or err.errno not in _DISK_ERRORS:
        return None
    where = f" {err.filename}" if err.filename else ""
    return (f"cannot write{where}: {err.strerror}; free some space or choose a folder you can write "
            "(hydra.run.dir=..., mlflow.tracking_uri=sqlite:///...)")
