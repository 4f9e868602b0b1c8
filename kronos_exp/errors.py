"""The errors a user can cause and fix (bad data, missing checkpoints, wrong settings): the CLI
prints their message alone, without a traceback. Anything else (a bug, an error from inside
torch or numpy) keeps its traceback.

This module imports nothing of the package at load time, so every layer can raise ``ConfigError``.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work (an unknown device, mismatched bit widths, ...). The message
    names the key, its value and what would be valid."""


class TrainingFailed(RuntimeError):
    """Training ran but produced nothing worth keeping (a loss that was never finite); the message
    says which settings to change."""


def __getattr__(name: str):
    # USER_ERRORS gathers the error types of the layers below; imported on first use so that
    # those layers can import ConfigError from here without a cycle.
    if name == "USER_ERRORS":
        from .data import DataError
        from .model.checkpoint import CheckpointError, CheckpointNotFound
        from .phases.predictor import TokenizerUnavailable

        return (DataError, CheckpointError, CheckpointNotFound, TokenizerUnavailable, ConfigError, TrainingFailed)
    raise AttributeError(name)
