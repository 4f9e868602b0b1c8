"""Registered checkpoints: each finished phase's best checkpoint as a model version tagged with its
fingerprint, found again by that fingerprint for ``skip_existing``."""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..model.checkpoint import WEIGHTS_NAME, CheckpointNotFound
from .fingerprint import (FINGERPRINT_TAG, data_files_digest, differences, fingerprint, fingerprint_filter,
                          folder_digests)

FINGERPRINT_ARTIFACT = "fingerprint.json"  # a phase run's fingerprint inputs, logged when it opens (lifecycle.py)

log = logging.getLogger(__name__)


FILES_TAG = "files_sha256"  # JSON {relative path: sha256} of every file of the version
# What MLflow (< 3.18) writes beside MLmodel when it downloads a models:/ version: its name and version (YAML).
REGISTERED_MODEL_META_FILE_NAME = "registered_model_meta"
# In every folder kronos_exp registers, among its digested files: {"model_name", "fingerprint"}, which
# versions a copy of it may be (a loader that is handed the folder alone finds them by it).
REGISTRATION_FILE = "registration.json"
REGISTRATION_MAX_BYTES = 4096


class RegistrationUnreadable(ValueError):
    """A folder names no registered model (one sentence why)."""


def write_registration(folder: Path, model_name: str, fingerprint: str) -> None:
    (folder / REGISTRATION_FILE).write_text(json.dumps({"model_name": model_name, "fingerprint": fingerprint}))


def read_registration(folder: Path) -> tuple[str, str]:
    """(model name, fingerprint) that ``folder``'s registration file names: a claim to check, read as data."""
    path = folder / REGISTRATION_FILE
    try:
        with open(path, "rb") as handle:
            text = handle.read(REGISTRATION_MAX_BYTES + 1)
        if len(text) > REGISTRATION_MAX_BYTES:
            raise ValueError
        named = json.loads(text)
        name, fingerprint = named["model_name"], named["fingerprint"]
        # Both go into a registry search: no quote or other character a search filter reads.
        if not (isinstance(name, str) and re.fullmatch(r"[\w. \-]{1,200}", name) and isinstance(fingerprint, str)
                and re.fullmatch(r"[0-9a-f]{1,128}", fingerprint)):
            raise TypeError
    except FileNotFoundError:
        raise RegistrationUnreadable(f"it holds no {REGISTRATION_FILE}, so nothing says which registered version it "
                                     "is (not a folder kronos_exp registered, or registered before it wrote one)") from None
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise RegistrationUnreadable(f"its {REGISTRATION_FILE} does not name a model and fingerprint") from None
    return name, fingerprint


def version_files(folder: Path) -> dict[str, str]:
    """folder_digests of a version's folder, less the ``registered_model_meta`` (name and version,
    YAML) that MLflow writes beside an MLmodel whenever a models:/ URI is downloaded; from a local
    store it writes it into the stored version itself."""
    return {path: digest for path, digest in folder_digests(folder).items()
            if path != REGISTERED_MODEL_META_FILE_NAME}


def integrity_problems(folder: Path, tags: dict[str, str], actual: dict[str, str] | None = None) -> list[str]:
    """Every way ``folder`` (its ``version_files``, when already taken: ``actual``) differs from the
    checkpoint registered with ``tags``, one sentence each (none when every file matches)."""
    if FILES_TAG not in tags:
        return ["it was registered without a digest of each of its files (before kronos_exp recorded them): "
                "nothing can be checked"]
    expected, actual = json.loads(tags[FILES_TAG]), version_files(folder) if actual is None else actual
    problems = []
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            problems.append(f"{path} is missing")
        elif path not in expected:
            problems.append(f"{path} is not one of its registered files (added since, or registered before the "
                            "digest covered every file of a version)")
        elif actual[path] != expected[path]:
            problems.append(f"{path} differs from the registered file (sha256 {actual[path][:12]}, "
                            f"registered {expected[path][:12]})")
    return problems


def integrity_problem(folder: Path, tags: dict[str, str]) -> str | None:
    """Why ``folder`` is not the checkpoint registered with ``tags`` (None when every file matches)."""
    problems = integrity_problems(folder, tags)
    return problems[0] if problems else None


@dataclass
class RegisteredCheckpoint:
    name: str
    version: str
    fingerprint: str
    run_id: str
    source: str
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


DATA_KEY_LENGTH = 12  # hex digits of a data key (``data_key``)
DATA_TAG_PREFIX = "data."  # registered-model tag data.<data key>: that data, in words (files, series, dates, splits)


def data_key(data_fingerprint: Mapping[str, Any]) -> str:
    """The data an evaluation ran on, as 12 hex digits: its files' contents and every data setting
    (splits, window, clip, ...), not where the files are (``data_fingerprint`` already leaves that out)."""
    return fingerprint(dict(data_fingerprint))[:DATA_KEY_LENGTH]


def data_alias(alias: str, data: str) -> str:
    """``best-3f9a0c1b2d4e``: ``alias`` for the data whose key is ``data`` (MLflow's alias names take
    letters, digits, ``_`` and ``-``)."""
    return f"{alias}-{data}"


def holder_tag(alias: str) -> str:
    """The registered-model tag that names the data key ``alias`` stands for (``best.data``)."""
    return f"{alias}.data"


@dataclass(frozen=True)
class Ranked:
    """Where ``Registry.rank`` left the aliases: the best version, its score and the aliases moved to it."""
    version: int
    score: float
    moved: tuple[str, ...]


@dataclass(frozen=True)
class DataAlias:
    """A data set's own alias, the version it points at, its data in words, and the plain aliases
    (``best``) that stand for the same data."""
    alias: str
    version: str
    description: str
    also: tuple[str, ...]


class Registry:
    def __init__(self, client: MlflowClient):
        self.client = client

    @classmethod
    def of_store(cls, tracking_uri: str) -> "Registry":
        """The registry of the store at ``tracking_uri`` (also the store ``models:/`` URIs download from)."""
        mlflow.set_tracking_uri(tracking_uri)
        return cls(MlflowClient(tracking_uri))

    def register(self, name: str, run_id: str, artifact_path: str, digests: dict[str, str], fingerprint: str,
                 tags: dict[str, str]) -> RegisteredCheckpoint:
        """Register the checkpoint already logged under ``artifact_path`` of ``run_id``, with the
        sha256 of each of its files (``digests``), all of which ``fetch`` checks before reuse."""
        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        all_tags = {**tags, FINGERPRINT_TAG: fingerprint, "sha256": digests[WEIGHTS_NAME],
                    FILES_TAG: json.dumps(digests, sort_keys=True)}
        mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=all_tags)
        return RegisteredCheckpoint(name, mv.version, fingerprint, run_id, source, all_tags)

    def tagged(self, name: str, fingerprint: str) -> list[RegisteredCheckpoint]:
        """Versions of ``name`` tagged with ``fingerprint``, newest first; the store's error where it
        cannot say (what a server refusing to serve reports)."""
        found = self.client.search_model_versions(f"name = '{name}' and {fingerprint_filter(fingerprint)}")
        return [RegisteredCheckpoint(name, mv.version, fingerprint, mv.run_id, mv.source, dict(mv.tags))
                for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True)]

    def find(self, name: str, fingerprint: str) -> list[RegisteredCheckpoint]:
        """``tagged``, or none where the store cannot say: the phase then trains."""
        try:
            return self.tagged(name, fingerprint)
        except MlflowException:
            return []

    def near_misses(self, name: str, inputs: dict, limit: int = 5) -> list[str]:
        """For a fingerprint that is not registered: the versions of ``name`` trained on the same
        data files, newest first, each with the inputs that differ (``seed: 1 (registered: 42)``)."""
        digest = data_files_digest(inputs["data"])
        try:
            found = self.client.search_model_versions(f"name = '{name}' and tags.data_files = '{digest}'")
        except MlflowException:
            return []
        lines = []
        for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True)[:limit]:
            try:
                registered = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{FINGERPRINT_ARTIFACT}")
                diff = "; ".join(differences(inputs, registered)) or "nothing (identical inputs)"
            except Exception as err:  # a version registered before inputs were logged, a lost artifact
                diff = f"unknown ({type(err).__name__})"
            lines.append(f"{name} v{mv.version} differs in {diff}")
        return lines

    def download(self, uri: str, dst: Path) -> tuple[RegisteredCheckpoint, Path]:
        """The version ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` names, and a local copy
        of its files (the same order as ``fetch``)."""
        ref = uri[len("models:/"):]
        name, sep, which = ref.partition("@") if "@" in ref else ref.rpartition("/")
        try:
            mv = (self.client.get_model_version_by_alias(name, which) if sep == "@"
                  else self.client.get_model_version(name, which))
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst / ref.replace("/", "-").replace("@", "-")))
        except Exception as err:
            raise CheckpointNotFound(f"cannot load {uri} from {self.client.tracking_uri}: "
                                     f"{str(err).splitlines()[0]}") from None
        version = RegisteredCheckpoint(name, str(mv.version), mv.tags.get(FINGERPRINT_TAG, ""), mv.run_id, mv.source,
                                       dict(mv.tags))
        return version, Path(local)

    def rank(self, version: RegisteredCheckpoint, key: str, score: float, alias: str | None,
             badness: Callable[[float], float], data: str, description: str) -> Ranked | None:
        """Tag ``version`` with its ``score`` under ``key`` (a score on the data whose key is ``data``,
        ``description`` in words) and point that data's own alias (``data_alias``) at the version of its
        model whose score under ``key`` has the least ``badness``. ``alias`` itself moves with it only
        while it stands for this data: scores of different data never compare, so one evaluation of
        another data set cannot move it. None: no alias."""
        stands = bool(alias) and self._stands_for(version.name, alias, data, key)  # before this version's tag
        self.tag(version, {key: repr(score)})
        if not alias:
            return None
        scored = [(float(mv.tags[key]), int(mv.version))
                  for mv in self.client.search_model_versions(f"name = '{version.name}'")
                  if key in mv.tags and math.isfinite(float(mv.tags[key]))]
        best = min(scored, key=lambda sv: (badness(sv[0]), sv[1]))
        moved = (data_alias(alias, data), *((alias,) if stands else ()))
        for name in moved:
            self.client.set_registered_model_alias(version.name, name, str(best[1]))
        self.client.set_registered_model_tag(version.name, DATA_TAG_PREFIX + data, description)
        if stands:
            self.client.set_registered_model_tag(version.name, holder_tag(alias), data)
        return Ranked(best[1], best[0], moved)

    def _stands_for(self, name: str, alias: str, data: str, key: str) -> bool:
        """Whether ``alias`` of model ``name`` is the best of data ``data`` (ranked under ``key``): the
        data its holder tag names; one not set yet (or deleted) is taken by the first data ranked; one
        set before holder tags were kept stands for the data its version was ranked on."""
        model = self.client.get_registered_model(name)
        held = model.aliases.get(alias)
        if held is None:
            return True
        if holder_tag(alias) in model.tags:
            return model.tags[holder_tag(alias)] == data
        return key in self.client.get_model_version(name, str(held)).tags

    def data_aliases(self, name: str) -> list[DataAlias]:
        """Each data set's own alias of model ``name`` (``data_alias``), by alias name, with the
        version it points at, its data in words and the plain aliases that stand for that data."""
        model = self.client.get_registered_model(name)
        out = []
        for alias, version in sorted(model.aliases.items()):
            data = alias.rpartition("-")[2]
            if DATA_TAG_PREFIX + data in model.tags:
                also = tuple(a for a in sorted(model.aliases) if model.tags.get(holder_tag(a)) == data)
                out.append(DataAlias(alias, str(version), model.tags[DATA_TAG_PREFIX + data], also))
        return out

    def tag(self, version: RegisteredCheckpoint, tags: dict[str, str]) -> None:
        for name, value in tags.items():
            self.client.set_model_version_tag(version.name, version.version, name, value)

    def fetch(self, name: str, fingerprint: str, dst: Path) -> tuple[RegisteredCheckpoint, Path] | None:
        """The newest registered version whose files download intact, as a local folder."""
        for version in self.find(name, fingerprint):
            target = dst / f"{version.name}-v{version.version}"
            shutil.rmtree(target, ignore_errors=True)
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(target)))
            except Exception as err:  # missing artifact store, deleted files, network
                log.warning("%s is registered but its files did not download (%s); trying older versions",
                            version.label, err)
                continue
            problem = integrity_problem(local, version.tags)
            if problem:
                log.warning("%s is not reused: %s", version.label, problem)
                continue
            return version, local
        return None
