"""Data-parallel training under torchrun: process group, sampler, rank-0 gate, metric all-reduce.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them this is a world of one
and nothing here talks to ``torch.distributed``. Only rank 0 touches the tracking store: work
that does goes through :meth:`World.rank_zero`, which runs it there and hands every rank the
result, so all ranks take the same decision.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

T = TypeVar("T")
BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rank_zero(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` runs on rank 0 only (tracking, registry); every rank gets its (picklable) result."""
        return self.share(fn(*args, **kwargs) if self.is_main else None)

    def share(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (what the others pass is ignored)."""
        return broadcast(obj) if self.distributed else obj

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def device_for(world: World, requested: torch.device) -> torch.device:
    """Under torchrun each process takes the CUDA device of its local rank."""
    if requested.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        return device
    return requested


def start(world: World, device: torch.device, backend: str | None) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU, unless ``backend`` says otherwise."""
    if not world.distributed or dist.is_initialized():
        return
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in BACKENDS:
        raise ValueError(f"dist_backend={backend!r}; valid: {', '.join(BACKENDS)} or null (nccl on CUDA, gloo on CPU)")
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


_FAILED_KEY = "kronos_exp/failed_rank"


def _store():
    """The process group's key-value store (torchrun's), or None outside a process group."""
    if not dist.is_initialized():
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # a private accessor: without it, failures are reported as they come
        return None


def report_failure(world: World) -> None:
    """Tell the other ranks that this one is failing with its own error (printed by this rank)."""
    store = _store()
    if store is not None:
        try:
            store.set(_FAILED_KEY, str(world.rank))
        except Exception:
            pass


def failed_peer() -> int | None:
    """The rank that reported a failure, if any: its error, not the broken collective, is the news."""
    store = _store()
    try:
        return int(store.get(_FAILED_KEY)) if store is not None and store.check([_FAILED_KEY]) else None
    except Exception:
        return None


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (``t`` itself in a world of one), on ``t``'s device."""
    if not dist.is_initialized():
        return t
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors.
    on = t if dist.get_backend() == "nccl" else t.detach().cpu().clone()
    dist.all_reduce(on)
    return on.to(t.device)


class EpochSampler(DistributedSampler):
    """This rank's share of a seeded per-epoch shuffle (``set_epoch``), optionally starting
    ``skip`` samples in, where a resumed epoch picks up.

    With ``drop_last`` every rank takes ``rank, rank + world, ...`` of the same permutation, so
    batch k of N ranks covers the same windows as batch k of one process with N times the batch.
    """

    def __init__(self, dataset: Dataset, world: World, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=world.world_size, rank=world.rank, shuffle=shuffle, seed=seed,
                         drop_last=shuffle)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def shard(n: int, world: World) -> list[int]:
    """Indices of ``n`` items for this rank, without overlap or padding (for validation)."""
    return list(range(world.rank, n, world.world_size))
