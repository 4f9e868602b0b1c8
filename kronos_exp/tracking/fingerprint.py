"""Fingerprints: a hash of exactly what determines a phase's result.

Two runs with the same fingerprint train the same checkpoint, so the second can reuse the first's.
What goes in is content, never location: the bytes of the data files, the pretrained weights and
the training code, plus the settings that change the trained weights. `phase_fingerprint_inputs`
builds that dict from a run's config (kept, so a miss can say what differs); `fingerprint` hashes
it. Every rule about what enters a fingerprint lives in this module.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from ..data.digest import file_sha256
from ..schemas import EvalConfig, TrainConfig
from ..model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, resolve_checkpoint_dir

# The package folders whose source decides what a phase trains (models, data, losses, loop).
# Forecasting, evaluation and tracking code measure or record a checkpoint, never change it.
TRAINING_CODE = ("model", "data", "phases", "train")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# Settings that change how a run is reported or how fast it goes, not the weights it trains.
NOT_FINGERPRINTED = ("log_interval", "token_cache_mb")  # reporting and memory, not results
DATA_NOT_FINGERPRINTED = ("path", "paths", "cache")  # where the files live (their contents are hashed); caching

FINGERPRINT_TAG = "fingerprint"  # on a phase run and on a registered version: the fingerprint of what it trained


def fingerprint_filter(fp: str) -> str:
    """The MLflow search filter (runs or model versions) for what carries fingerprint ``fp``."""
    return f"tags.{FINGERPRINT_TAG} = '{fp}'"


def folder_digests(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path: what a checkpoint is, byte for byte."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def fingerprint(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` (keys sorted, so order never matters)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def code_digest(root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the ``*.py`` files of ``root``'s training folders, by relative path and content,
    so a registry filled before a change to a loss, a model or the loop is not reused after it.
    Computed once per process."""
    h = hashlib.sha256()
    for folder in TRAINING_CODE:
        for path in sorted((root / folder).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def data_fingerprint(file_digests: list[str], data_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The data part: the sha256 of each file's bytes as they were read for training (in load
    order) and the data settings, without the strings that only say where the files are."""
    return {"files": list(file_digests),
            "config": {k: v for k, v in data_settings.items() if k not in DATA_NOT_FINGERPRINTED}}


def data_files_digest(data: Mapping[str, Any]) -> str:
    """One hash of the data files alone: which registered versions were trained on this data."""
    return fingerprint({"files": data["files"]})


def runner_identity(runner: type) -> dict[str, str] | None:
    """A phase runner of one's own (``phases.<name>._target_`` outside kronos_exp): its class and the
    sha256 of the file that defines it (not of the modules that file imports), since its loss or
    model decides what the phase trains. None for kronos_exp's own runners: the phase's name picks
    them and the code digest covers their source."""
    module = runner.__module__
    if module == "kronos_exp" or module.startswith("kronos_exp."):
        return None
    path = getattr(sys.modules.get(module), "__file__", None)
    return {"class": f"{module}.{runner.__qualname__}", "source": file_sha256(Path(path)) if path else "no file"}


def fingerprint_inputs(phase: str, settings: Mapping[str, Any], *, data: Mapping[str, Any], seed: int,
                       precision: str, initial_weights: str | None, upstream: Mapping[str, str] | None = None,
                       code: str | None = None, runner: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything that determines phase ``phase``'s checkpoint, as a plain dict.

    ``settings`` is the phase's config section; ``initial_weights`` the content digest of its
    pretrained checkpoint (None: random init); ``runner`` a runner of one's own (runner_identity),
    absent for kronos_exp's, so their fingerprints are what they were before runners entered. A
    pretrained checkpoint's config.json decides the architecture, so ``arch`` is left out then;
    ``max_context`` only warns during training.
    """
    kept = {k: v for k, v in settings.items() if k not in NOT_FINGERPRINTED and k not in ("pretrained", "seed")}
    if initial_weights is not None:
        kept.pop("arch", None)
    if phase == "predictor":
        kept.pop("max_context", None)
    inputs = {
        "phase": phase,
        "data": dict(data),
        "settings": kept,
        "initial_weights": initial_weights or "random",
        "seed": seed,
        "precision": precision,
        "code": code or code_digest(),
        "upstream": dict(upstream or {}),
    }
    if runner is not None:
        inputs["runner"] = dict(runner)
    return inputs


def flat_inputs(inputs: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"settings.lr": "0.002", "data.files": "ab12..,cd34..", ...}``: inputs to compare key by key."""
    out: dict[str, str] = {}
    for key, value in inputs.items():
        if isinstance(value, Mapping):
            out.update(flat_inputs(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def differences(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """``["seed: 1 (registered: 42)", ...]`` for each input key whose value differs."""
    a, b = flat_inputs(wanted), flat_inputs(found)
    shown = lambda v: v if len(v) <= 40 else v[:16] + "..."  # noqa: E731  (file and code digests)
    return [f"{k}: {shown(a.get(k, 'unset'))} (registered: {shown(b.get(k, 'unset'))})"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def checkpoint_digest(path_or_hub_id: str) -> str:
    """Identity of a pretrained checkpoint: the hash of its contents (config values and weights
    bytes), not of its name or folder."""
    folder = resolve_checkpoint_dir(path_or_hub_id)
    config = json.loads((folder / CONFIG_NAME).read_text())
    weights = (folder / WEIGHTS_NAME).resolve()
    stat = weights.stat()
    return f"{fingerprint(config)[:16]}:{_weights_digest(weights, stat.st_size, stat.st_mtime_ns)}"


@functools.lru_cache(maxsize=16)
def _weights_digest(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a pretrained weights file, once per process while its size and mtime stay: a
    run asks for it several times (fingerprints, the tokenizer's lookup, evaluation), and a
    Kronos-base file takes a second or more to hash."""
    return file_sha256(path)


def phase_fingerprint_inputs(name: str, section: TrainConfig | EvalConfig, *, data: Mapping[str, Any], precision: str,
                             world_size: int = 1, upstream: Mapping[str, str] | None = None,
                             runner: type | None = None) -> dict[str, Any]:
    """What determines phase ``name``'s checkpoint, trained with ``section`` (resolved: its seed
    set): data, its settings, initial weights, its seed, precision, the training code and (for
    later phases) the fingerprint of what they build on, and the ``runner`` class that trains it
    where it is one's own (runner_identity). Early stopping only when it is on: off, a phase trains
    what it trained before the setting existed."""
    settings = dataclasses.asdict(section)
    if "batch_size" in settings:  # per process: N processes of B train the batches one process of N*B does
        settings["batch_size"] *= world_size
    if settings.get("early_stopping", {}).get("patience") is None:
        settings.pop("early_stopping", None)
    pretrained = settings.get("pretrained")
    return fingerprint_inputs(name, settings, data=data, seed=section.seed, precision=precision,
                              initial_weights=checkpoint_digest(pretrained) if pretrained else None,
                              upstream=upstream, runner=runner_identity(runner) if runner is not None else None)


def eval_setup_fingerprint(settings: EvalConfig, data: Mapping[str, Any], pred_len: int) -> str:
    """Same data and same forecasting settings (``settings`` resolved: its seed set): evaluation
    scores that may be ranked against each other."""
    kept = dataclasses.asdict(settings)
    for key in ("predictor", "tokenizer", "alias", "plot_series"):
        kept.pop(key)
    kept["pred_len"] = pred_len
    return fingerprint({"data": dict(data), "eval": kept})
