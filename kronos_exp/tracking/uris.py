"""Tracking URIs: the default store (SQLite under ./outputs, so a first run needs no server), and
what a URI says about where the store is: a remote server (http/https), or a SQLite file whose
folder also holds its artifacts, the unended-run records and the Optuna study."""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from ..outputs import outputs_root

SQLITE = "sqlite:///"


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def without_login(uri: str) -> str:
    """``uri`` less its ``user:password@``: for a server's pages and health check, which need no
    login (urllib would take the login for part of the host)."""
    parts = urllib.parse.urlsplit(uri)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI; None for any other store."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def sqlite_uri(database: Path) -> str:
    return f"{SQLITE}{database}"


def default_tracking_uri(root: Path | None = None) -> str:
    """An embedded SQLite store under ./outputs, so a first run needs no server."""
    return sqlite_uri((outputs_root(root) / "mlflow.db").resolve())


def resolve_tracking_uri(uri: str | None) -> str:
    """``mlflow.tracking_uri`` as given, else $MLFLOW_TRACKING_URI, else the default store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
