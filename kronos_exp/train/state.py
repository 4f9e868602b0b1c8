"""The ``last`` training state: everything the loop needs to carry on where it stopped.

Format: one safetensors file. Every tensor of the state (model, optimizer moments, the loss-scale
and random-generator states, NumPy's generator key as raw bytes) is a safetensors tensor; every
plain value (epoch, step, histories, the optimizer's hyper-parameters, Python's generator state)
is JSON in the file's header metadata, with tuples, non-string dict keys and tensors spelled as
small tagged objects. Loading it parses JSON and copies bytes: no pickle, so a planted or
tampered file can fail to load but never runs code. (``torch.load(weights_only=True)`` would
still run the pickle machine on a file an attacker may have written, with an allow-list to keep
in step with torch and NumPy; this format needs neither.) Floats round-trip exactly through JSON
and tensors byte for byte, so a resumed run ends with the weights of one never stopped.

Written atomically (temp file, fsync, rename) so a kill at any moment leaves either the previous
state or the new one, never half a file. A failed write (a full disk) removes the temp file and
raises an ``OSError`` naming the state file. The whole file is built in memory before it is
written (safetensors' own file writer does not report a full disk), so a save briefly needs the
state's size again in host memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..errors import UserError

STATE_VERSION = 2
STATE_FORMAT = "kronos_exp.training_state"


class StateUnreadable(UserError, ValueError):
    """The file is not a training state this kronos_exp can read (truncated, altered, another
    format or version); the message names the file."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation, dropout, sampling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Rank r > 0 of a data-parallel run draws its dropout and sampling from seed + RANK_SEED_STRIDE * r.
RANK_SEED_STRIDE = 1_000_003


def seed_training_noise(seed: int, rank: int) -> None:
    """Give each rank its own dropout masks and sampled draws, after the model is built from
    ``seed`` (the same weights on every rank). Rank 0 carries on from where the model's
    initialisation left the generators, so a single process draws exactly what it always drew;
    rank r > 0 reseeds them from ``seed + RANK_SEED_STRIDE * r``."""
    if rank:
        seed_everything(seed + RANK_SEED_STRIDE * rank)


def global_rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device): this process's dropout and sampling."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def rng_states(loader_generator: torch.Generator) -> dict[str, Any]:
    """The global generators and the DataLoader's own generator."""
    return {**global_rng_states(), "loader": loader_generator.get_state()}


def restore_rng_states(states: dict[str, Any], loader_generator: torch.Generator, rank: int = 0) -> None:
    """Rank r > 0 takes its own generators from ``states["peers"][r - 1]`` (a state saved under
    DDP); a state without them (a single process's, or one saved before ranks drew apart) gives
    every rank rank 0's. The loader's generator is the same on every rank."""
    own = states["peers"][rank - 1] if rank and "peers" in states else states
    random.setstate(own["python"])
    np.random.set_state(own["numpy"])
    torch.set_rng_state(own["torch"])
    if own["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(own["cuda"])
    loader_generator.set_state(states["loader"])


class _Encoder:
    """Plain values to JSON, tensors (and NumPy arrays, as raw bytes) to named tensors."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[int] = set()

    def _tensor(self, t: torch.Tensor) -> str:
        t = t.detach().cpu()
        storage = t.untyped_storage()
        # safetensors refuses tensors that share memory (tied weights, views): give those their own.
        if (storage.data_ptr() in self._storages or not t.is_contiguous()
                or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone(memory_format=torch.contiguous_format)
        self._storages.add(t.untyped_storage().data_ptr())
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t
        return name

    def __call__(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {"__tensor__": self._tensor(value)}
        if isinstance(value, np.ndarray):
            raw = torch.from_numpy(np.ascontiguousarray(value).reshape(-1).view(np.uint8).copy())
            return {"__ndarray__": self._tensor(raw), "dtype": value.dtype.str, "shape": list(value.shape)}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self(v) for k, v in value.items()}
            return {"__items__": [[self(k), self(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [self(v) for v in value]}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"a training state holds tensors and plain values; got {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        raw = tensors[value["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _write_atomically(data: bytes, path: Path, before_replace: Callable[[str], None] | None) -> None:
    """``<path>.tmp``, fsynced, then renamed over ``path``; on a failed write the temp file goes and
    the ``OSError`` names ``path``. ``before_replace(sha256)`` runs between the two."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    if before_replace is not None:
        before_replace(hashlib.sha256(data).hexdigest())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@dataclass
class TrainingState:
    """Where training stands at an optimizer-step boundary.

    ``epoch`` is the epoch in progress and ``batches_done`` the batches of it already trained on
    (0 at an epoch's start); ``rng`` is taken at that same boundary, except ``rng["loader"]``, which
    is the DataLoader generator as it was when the epoch's iterator was created. Under DDP,
    ``rng["peers"]`` holds the global generators of ranks 1, 2, ... (each rank draws its own).
    """
    epoch: int
    batches_done: int
    step: int
    world_size: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]  # fp16 loss scale (empty otherwise)
    rng: dict[str, Any]
    best_val_loss: float
    best_epoch: int
    val_history: list[float] = field(default_factory=list)
    train_history: list[tuple[int, float]] = field(default_factory=list)
    samples: int = 0
    train_seconds: float = 0.0
    window: dict[str, Any] = field(default_factory=dict)  # train-loss sums since the last log line

    def save(self, path: Path, before_replace: Callable[[str], None] | None = None) -> None:
        """Atomic (see the module docstring); ``before_replace(sha256 of the new file)`` is called
        once it is on disk, before it replaces the previous state (a caller records the digest)."""
        encode = _Encoder()
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it deep-copies tensors
        plain = json.dumps({"version": STATE_VERSION, **encode(values)})
        data = save_tensors(encode.tensors, metadata={"format": STATE_FORMAT, "state": plain})
        _write_atomically(data, path, before_replace)

    @classmethod
    def load(cls, path: Path) -> "TrainingState":
        """Read a state written by ``save``; ``StateUnreadable`` for anything else."""
        try:
            tensors = load_tensors(Path(path).read_bytes())
            plain = json.loads(_metadata(path)["state"])
        except (SafetensorError, ValueError, KeyError, OSError) as err:
            raise StateUnreadable(f"{path} is not a readable training state ({_reason(err)})") from None
        version = plain.pop("version", None)
        if version != STATE_VERSION:
            raise StateUnreadable(f"{path} holds training state version {version}; this kronos_exp reads version "
                                  f"{STATE_VERSION}")
        return cls(**_decode(plain, tensors))


def _metadata(path: Path) -> dict[str, str]:
    """The metadata of a state file, without reading its tensors; ``StateUnreadable`` when it is
    not a safetensors file written by ``TrainingState.save``."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise StateUnreadable(f"{path} is not a readable training state ({_reason(err)})") from None
    if metadata.get("format") != STATE_FORMAT or "state" not in metadata:
        raise StateUnreadable(f"{path} is a safetensors file but not a kronos_exp training state")
    return metadata


def _reason(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
