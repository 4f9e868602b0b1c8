"""Checkpoints in the published Kronos layout: ``config.json`` (constructor arguments) and
``model.safetensors`` (the state dict under the published key names).

Loading is strict: an unknown or missing config key, a missing or unexpected tensor, or a shape
mismatch is an error that names it; weights that look never trained are loaded with a warning.
Saving is atomic: a crash never leaves a half-written folder.
"""
from __future__ import annotations

import errno
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from .blocks import RMSNorm

log = logging.getLogger(__name__)
_SAID_UNTRAINED: set[str] = set()  # folders whose weights were said to look untrained, in this process

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(UserError, ValueError):
    """A checkpoint folder does not match the model it is loaded into."""


class CheckpointNotFound(UserError, FileNotFoundError):
    """Neither a local checkpoint folder nor a reachable hub repository."""


def _download_from_hub(repo_id: str) -> Path:
    how = (f"Download it where you are online, e.g. `huggingface-cli download {repo_id} "
           f"--local-dir weights/{repo_id.split('/')[-1]}`, copy that folder here and pass its path.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointNotFound(
            f"'{repo_id}' is not a local folder, and loading it as a Hugging Face Hub id needs "
            f"huggingface_hub (pip install 'kronos_exp[hub]'). {how}") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # network errors, unknown repos, offline mode: all end the same way
        raise CheckpointNotFound(
            f"'{repo_id}' is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). {how}") from None


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint folder for a path or a hub id such as ``NeoQuasar/Kronos-small``."""
    text = str(path_or_hub_id)
    path = Path(text).expanduser()
    if path.is_dir():
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise CheckpointNotFound(f"checkpoint folder '{path}' has no {name}; a Kronos checkpoint "
                                         f"holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        return path
    if path.exists():
        raise CheckpointNotFound(f"'{path}' is a file; pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    looks_local = path.is_absolute() or text.startswith((".", "~")) or not _HUB_ID.match(text)
    if looks_local:
        raise CheckpointNotFound(f"checkpoint folder '{text}' does not exist")
    return _download_from_hub(text)


def constructor_keys(cls) -> list[str]:
    """The arguments of ``cls``'s constructor, in order: the keys of its config.json."""
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def constructor_config(cls, arguments: dict[str, Any]) -> dict[str, Any]:
    """The config of a ``cls`` built with ``arguments`` (its constructor's ``locals()``): its
    constructor's arguments by name, so config.json holds exactly what the constructor takes."""
    return {key: arguments[key] for key in constructor_keys(cls)}


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for a module whose config is its constructor kwargs
    (set by its constructor with ``constructor_config``)."""

    config: dict

    @classmethod
    def from_config(cls, config: dict):
        keys = constructor_keys(cls)
        unknown = sorted(set(config) - set(keys))
        missing = [k for k in keys if k not in config]
        if unknown or missing:
            parts = ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])
            raise CheckpointError(f"{cls.__name__} config has {' and '.join(parts)}; valid keys: {keys}")
        return cls(**{k: config[k] for k in keys})

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, map_location: str | torch.device = "cpu"):
        folder = resolve_checkpoint_dir(path_or_hub_id)
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{folder / CONFIG_NAME} is not valid JSON: {err}") from None
        try:
            model = cls.from_config(config)
        except CheckpointError as err:
            raise CheckpointError(f"{folder / CONFIG_NAME}: {err}") from None
        model.load_weights(folder / WEIGHTS_NAME, map_location)
        if str(folder) not in _SAID_UNTRAINED and _looks_untrained(model):
            _SAID_UNTRAINED.add(str(folder))  # once per folder: an evaluation loads its model twice
            log.warning("%s weights %s look untrained: every norm weight is exactly 1, as in a newly initialised "
                        "model; check that these are the weights you meant to use", cls.__name__, folder)
        return model

    def load_weights(self, file: Path, map_location="cpu") -> None:
        try:
            state = load_file(str(file), device=str(map_location))
        except Exception as err:
            raise CheckpointError(f"cannot read {file}: {err}") from None
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            lines = [f"{file} does not match {type(self).__name__}({self.config}):"]
            lines += [f"  missing tensors: {missing}"] if missing else []
            lines += [f"  unexpected tensors: {unexpected}"] if unexpected else []
            lines += [f"  shape mismatches: {mismatched}"] if mismatched else []
            raise CheckpointError("\n".join(lines))
        self.load_state_dict(state, strict=True)

    def save_pretrained(self, directory: str | os.PathLike,
                        before_replace: Callable[[Path], None] | None = None) -> Path:
        """Write config.json + model.safetensors; the folder appears complete or not at all.
        ``before_replace(the complete new folder)`` runs before it replaces the old one (a caller
        records what it holds, so a kill between the two leaves no unrecorded checkpoint)."""
        target = Path(directory)
        staging = staging_folder(target)
        try:
            state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
            try:
                save_file(state, str(staging / WEIGHTS_NAME))
            except OSError:
                raise
            except Exception as err:  # safetensors reports a failed write (a full disk) as its own type
                code = re.search(r"os error (\d+)", str(err))
                number = int(code.group(1)) if code else errno.EIO
                raise OSError(number, os.strerror(number), str(target / WEIGHTS_NAME)) from None
            (staging / WEIGHTS_NAME).chmod(0o666 & ~_umask())  # safetensors writes 0600; config.json is not
            (staging / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            if before_replace is not None:
                before_replace(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        move_into_place(staging, target)
        return target


def _looks_untrained(model: torch.nn.Module) -> bool:
    """Every norm weight exactly 1, as initialised: any training step moves them. (Biases tell less: a
    new tokenizer's Linear layers start with random ones.)"""
    norms = [m.weight for m in model.modules() if isinstance(m, RMSNorm)]
    return bool(norms) and all(bool((w == 1).all()) for w in norms)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def staging_folder(target: Path) -> Path:
    """A new folder beside ``target`` to build its next contents in, with the mode a folder made
    there would have (mkdtemp makes it private; a checkpoint folder is not)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o777 & ~_umask())
    return staging


def move_into_place(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target``: an existing ``target`` is moved aside (not
    deleted) until the new one is in place, so a reader or a crash sees the old folder or the new,
    never a mix; on failure the old one is put back and ``staging`` removed."""
    previous = None
    try:
        if target.exists():
            previous = staging.with_name(staging.name + ".previous")
            os.replace(target, previous)
        os.replace(staging, target)
    except BaseException:
        if previous is not None and previous.exists() and not target.exists():
            os.replace(previous, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
