"""Passwords in URLs (``scheme://user:secret@host``) masked wherever text leaves the process: a
database or server URL is a setting like any other (``hydra.sweeper.storage``,
``mlflow.tracking_uri``), so without this its password would reach the console, the log files,
error lines, Hydra's saved config and MLflow's params, tags and artifacts.

Bottom layer: imports nothing of the package (errors.py masks the lines the CLI prints with it).
"""
from __future__ import annotations

import logging
import re
import warnings

# scheme://user:  then the password, up to the last "@" before a blank: one with a raw "@" or "/" in it
# is masked whole (over-masking a path or query that holds an "@" is the safe side to err on). Hydra
# prints overrides with their colons escaped: http\://user\:secret@host.
_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*\\*://[^\s:/@]*:)\S*@")


def mask_passwords(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``."""
    return _PASSWORD.sub(r"\1***@", text)


def mask_logs_and_warnings() -> None:
    """From now on, every log record and warning this process makes is masked, whatever logger,
    handler or hook shows it: Hydra's lines that print a sweep job's overrides, its warning that
    quotes a callback's error, libraries' messages. Idempotent."""
    make = logging.getLogRecordFactory()
    if getattr(make, "masks_passwords", False):
        return

    def masked(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: logging reports it when it emits
            return record
        shown = mask_passwords(message)
        if shown != message:
            record.msg, record.args = shown, None
        return record

    masked.masks_passwords = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked)
    format_warning = warnings.formatwarning
    warnings.formatwarning = lambda *args, **kwargs: mask_passwords(format_warning(*args, **kwargs))
