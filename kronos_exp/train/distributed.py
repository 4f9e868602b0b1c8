"""Data-parallel training under torchrun: process group, sampler, metric all-reduce, and how
ranks hear of one another (``World.share``, a failure or a stop elsewhere, ``wait_for_rank_zero``).

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them this is a world of one
and nothing here talks to ``torch.distributed``. Only rank 0 touches the tracking store; the ranks
meet around each phase in kronos_exp/runner.py, where rank 0 decides and ``World.share`` hands
every rank its decision and its result, so all ranks take the same path.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TypeVar

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
    _set(_PROCESS_KEY.format(world.rank), f"{socket.gethostname()} {os.getpid()}")


def stop(world: World) -> None:
    """Leave the process group; rank 0 first tells the ranks waiting on it (wait_for_rank_zero)."""
    if world.distributed and world.is_main:
        _set(_ENDED_KEY, "1", _store() or _launcher_store())
    if dist.is_initialized():
        dist.destroy_process_group()


def wait_for_rank_zero(world: World, timeout_s: float = 600.0) -> None:
    """A rank other than 0 waits until rank 0 has ended: an error every rank meets alike (a bad
    setting) is reported once, by rank 0, which also ends the runs, before torchrun stops the group."""
    store = _store() or _launcher_store()
    if not world.is_main and store is not None:
        with contextlib.suppress(Exception):  # a store that is gone: rank 0 and torchrun are gone too
            store.wait([_ENDED_KEY], datetime.timedelta(seconds=timeout_s))


def _launcher_store():
    """torchrun's key-value store, reached before (or without) a process group: a setting may be
    refused before the ranks join one."""
    try:
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=datetime.timedelta(seconds=30))
    except Exception:  # not under torchrun
        return None


# What the ranks tell each other through torchrun's store about how they end.
_FAILED_KEY = "kronos_exp/failed_rank"  # a rank failing with an error of its own (it prints it)
_PROCESS_KEY = "kronos_exp/process/{}"  # "<host> <pid>" of each rank, set when it joins
_STOPPED_KEY = "kronos_exp/stopped/{}"  # a rank that stops for an interrupt, not a failure
_ENDED_KEY = "kronos_exp/rank0_ended"  # rank 0 is leaving (set last)


def _store():
    """The process group's key-value store (torchrun's), or None outside a process group."""
    if not dist.is_initialized():
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # a private accessor: without it, failures are reported as they come
        return None


def _set(key: str, value: str, store=None) -> None:
    store = store or _store()
    if store is not None:
        try:
            store.set(key, value)
        except Exception:  # the store is torchrun's: gone only when torchrun is
            pass


def _get(key: str) -> str | None:
    store = _store()
    try:
        return store.get(key).decode() if store is not None and store.check([key]) else None
    except Exception:
        return None


def report_failure(world: World) -> None:
    """Tell the other ranks that this one is failing with its own error (printed by this rank)."""
    _set(_FAILED_KEY, str(world.rank))


def report_stop(world: World) -> None:
    """Tell the other ranks that this one ends for an interrupt: its exit is no failure."""
    _set(_STOPPED_KEY.format(world.rank), "1")


def peer_failure(world: World) -> str | None:
    """Which other process's failure stopped this torchrun, if any: one that reported its error,
    else one on this host whose process is gone without saying it stopped (killed: SIGKILL, out of
    memory). That failure, not the broken collective or torchrun's SIGTERM that follows, is the
    news. A process on another host that vanishes is not seen here."""
    reported = _get(_FAILED_KEY)
    if reported is not None:
        return None if int(reported) == world.rank else (
            f"process {reported} of this torchrun failed (its error is printed above)")
    host = socket.gethostname()
    for rank in range(world.world_size):
        where = _get(_PROCESS_KEY.format(rank)) if rank != world.rank else None
        if where is None or _get(_STOPPED_KEY.format(rank)) is not None:
            continue
        peer_host, pid = where.rsplit(" ", 1)
        if peer_host == host and _process_gone(int(pid)):
            return (f"process {rank} of this torchrun failed (it was killed, without an error of its own; torchrun "
                    "names the signal)")
    return None


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie that torchrun has not reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # the state is the field after the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every rank's (picklable) ``obj``, in rank order (``[obj]`` in a world of one)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (``t`` itself in a world of one), on ``t``'s device."""
    if not dist.is_initialized():
        return t
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors.
    on = t if dist.get_backend() == "nccl" else t.detach().cpu().clone()
    dist.all_reduce(on)
    return on.to(t.device)


def global_batch_mean(rows: torch.Tensor) -> torch.Tensor:
    """The mean of ``rows`` [N, D] over every rank's rows (each rank weighted by its N), with the
    gradient of this rank's share: ``d mean / d rows`` on each rank is ``world_size`` times its part
    of the global mean's, so DDP's averaging of the ranks' gradients gives exactly the gradient of
    one process over the global batch. One all-reduce in the forward pass, none in the backward
    (DDP's own stay the only collectives there). In a world of one: ``rows.mean(dim=0)`` itself.

    Every rank must call it at the same point (the training step, which every rank runs in step)."""
    local = rows.mean(dim=0)
    if not dist.is_initialized():
        return local
    n = rows.shape[0]
    sums = all_reduce_sum(torch.cat([local.detach() * n, local.new_tensor([n])]))
    share = dist.get_world_size() * n / sums[-1]
    # Its value is the global mean exactly; its gradient flows through this rank's rows only.
    return (sums[:-1] / sums[-1]).detach() + share * (local - local.detach())


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
