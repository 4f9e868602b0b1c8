"""The errors a user can cause and fix (bad data, missing checkpoints, wrong settings, a lost
tracking server, a full or read-only disk): the CLI prints their message alone, without a
traceback. Anything else (a bug, an error from inside torch or numpy) keeps its traceback.

This module imports nothing of the package but redact.py (the lines it gives the CLI show no URL's
password): every layer derives its own user errors from ``UserError`` (``DataError``,
``CheckpointError``, ``TrackingUnavailable``, ...).
"""
from __future__ import annotations

import errno

from .redact import mask_passwords


class UserError(Exception):
    """An error whose message is meant for the user: it names the file, key or value at fault and
    what would be valid."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (an unknown device, mismatched bit widths, ...). The message
    names the key, its value and what would be valid."""


class TrainingFailed(UserError, RuntimeError):
    """Training ran but produced nothing worth keeping (a loss that was never finite); the message
    says which settings to change."""


class TrialPruned(Exception):
    """Not an error: a search's pruner stopped this trial early (its validation loss is hopeless
    beside other trials'). Its runs end KILLED with a ``stopped`` tag giving this message; what
    it registered before (a tokenizer) stays reusable."""


class TrialTaken(TrialPruned):
    """Not an error of this job's: another search process ended its trial FAIL (it took this one's
    search for dead), so its result would not be recorded; the job stops as a pruned one does."""


# Write failures the user fixes outside the program: a full disk, a quota, a read-only or foreign folder.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def first_line(err: BaseException) -> str:
    """An exception's message in one line (its first), or its type's name when it has none."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def error_line(message: str) -> str:
    """The one line the command line ends with when it stops for a reason the user can fix."""
    return f"error: {mask_passwords(message)}"


def user_message(err: BaseException) -> str | None:
    """The line the CLI prints for an error the user can fix; None for a bug (shown with its traceback)."""
    if isinstance(err, UserError):
        return mask_passwords(str(err))
    if not isinstance(err, OSError) or err.errno not in _DISK_ERRORS:
        return None
    where = f" {err.filename}" if err.filename else ""
    return (f"cannot write{where}: {err.strerror}; free some space or choose a folder you can write "
            "(hydra.run.dir=..., mlflow.tracking_uri=sqlite:///...)")
