"""``python -m kronos_exp.forecasting verify models:/kronos-predictor/<v> [tracking_uri=...]``: every
file of a registered version, MLmodel included, against the digests its registry holds (the
``files_sha256`` tag), before it is served. MLflow imports whatever a version's MLmodel names when it
loads it, before the package's own loader can check anything; this command only downloads the files
and hashes them, so nothing of the package is imported or run.

Prints ``<uri>: <N> files match the registered digests`` (exit 0), or one ``<uri>: <problem>`` line
per file that differs, is missing or was added (exit 1); a version or store it cannot reach is one
``error:`` line (exit 1)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import UserError, error_line

USAGE = ("verify takes a registered version, models:/<name>/<version> or models:/<name>@<alias> "
         "(e.g. models:/kronos-predictor/1), and optionally tracking_uri=<store>")


class VerifyError(UserError):
    """A problem the user can fix: printed as one line, exit status 1."""


def download_version(uri: str, tracking_uri: str | None, download_to: Path):
    """(the registered version ``uri`` names, a local copy of its files); CheckpointNotFound names the
    URI and the store when it cannot be had."""
    from ..tracking.registry import Registry
    from ..tracking.runs import bound_http_retries
    from ..tracking.uris import resolve_tracking_uri, sqlite_path

    store = resolve_tracking_uri(tracking_uri)
    database = sqlite_path(store)
    if database is not None and not database.is_file():
        raise VerifyError(f"no MLflow store at {store}; pass tracking_uri=<the store your runs used> "
                          "(or set MLFLOW_TRACKING_URI)")
    bound_http_retries(timeout_s=10, max_retries=0)  # a dead server fails now, not in minutes
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # an error stays the first line
    return Registry.of_store(store).download(uri, download_to)


def main(argv: list[str]) -> int:
    words = [w for w in argv if not w.startswith("tracking_uri=")]
    tracking = [w.partition("=")[2] for w in argv if w.startswith("tracking_uri=")]
    if len(words) != 1 or not words[0].startswith("models:/") or len(tracking) > 1:
        raise VerifyError(USAGE)
    from ..model.checkpoint import CheckpointNotFound
    from ..tracking.registry import FILES_TAG, integrity_problems

    uri = words[0]
    with tempfile.TemporaryDirectory(prefix="kronos-verify-") as download_to:
        try:
            version, folder = download_version(uri, tracking[0] if tracking else None, Path(download_to))
        except CheckpointNotFound as err:  # "cannot load <uri> from <store>: <why>"
            raise VerifyError(str(err)) from None
        problems = integrity_problems(folder, version.tags)
    for problem in problems:
        print(f"{uri}: {problem}")
    if not problems:
        print(f"{uri}: {len(json.loads(version.tags[FILES_TAG]))} files match the registered digests")
    return 1 if problems else 0


def run(argv: list[str]) -> None:
    try:
        status = main(argv)
    except UserError as err:
        raise SystemExit(error_line(str(err))) from None
    if status:
        raise SystemExit(status)
