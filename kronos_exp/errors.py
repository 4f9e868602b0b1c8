"""The errors a user can cause and fix (bad data, missing checkpoints, wrong settings): the CLI
prints their message alone, without a traceback."""
from .data import DataError
from .model.checkpoint import CheckpointError, CheckpointNotFound
from .phases.predictor import TokenizerUnavailable


class ConfigError(ValueError):
    """A setting outside what it accepts; the message names the key and what would be valid."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, CheckpointNotFound, TokenizerUnavailable, ValueError)
