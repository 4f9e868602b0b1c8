"""The errors a user can cause and fix (bad data, missing checkpoints, wrong settings, a full or
read-only disk): the CLI prints their message alone, without a traceback."""
import errno

from .data import DataError
from .model.checkpoint import CheckpointError, CheckpointNotFound
from .phases.predictor import TokenizerUnavailable
from .tracking import TrackingUnavailable


class ConfigError(ValueError):
    """A setting outside what it accepts; the message names the key and what would be valid."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, CheckpointNotFound, TokenizerUnavailable, TrackingUnavailable,
               ValueError)

# Write failures the user fixes outside the program: a full disk, a quota, a read-only or foreign folder.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def user_message(err: BaseException) -> str | None:
    """The line the CLI prints for an error the user can fix; None for a bug (shown with its traceback)."""
    if isinstance(err, USER_ERRORS):
        return str(err)
    if not isinstance(err, OSError) or err.errno not in _DISK_ERRORS:
        return None
    where = f" {err.filename}" if err.filename else ""
    return (f"cannot write{where}: {err.strerror}; free some space or choose a folder you can write "
            "(hydra.run.dir=..., mlflow.tracking_uri=sqlite:///...)")
