"""Whole batches straight from in-memory window arrays.

A dataset with ``batch(indices)`` (WindowDataset, the predictor's token cache) builds a batch in
one vectorised call, so no per-window Python work and no collate. ``num_workers=0`` iterates in
the main process (the fastest choice for in-memory data on a CPU, measured); workers, when asked
for, each build whole batches. On CUDA batches come out of pinned memory so the copy to the device
can overlap the step.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def epoch_order(n: int, shuffle: bool, generator: torch.Generator | None,
                sampler: Iterable[int] | None = None) -> np.ndarray:
    """Window indices of one epoch: a given sampler's (e.g. a distributed one), else a permutation."""
    if sampler is not None:
        return np.fromiter(iter(sampler), dtype=np.int64)
    if shuffle:
        return torch.randperm(n, generator=generator).numpy()
    return np.arange(n, dtype=np.int64)


class _BatchesOf(Dataset):
    """Item i = batch i (for a DataLoader with workers and ``batch_size=None``)."""

    def __init__(self, dataset, chunks: Sequence[np.ndarray]):
        self.dataset, self.chunks = dataset, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int):
        return self.dataset.batch(self.chunks[i])


class Batches:
    """Re-iterable batches of ``dataset`` (one pass per ``iter``), as lists of tensors."""

    def __init__(self, dataset, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None, num_workers: int = 0, pin_memory: bool = False,
                 sampler: Iterable[int] | None = None):
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator
        self.num_workers, self.pin_memory, self.sampler = num_workers, pin_memory, sampler

    def _n(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def __len__(self) -> int:
        n = self._n()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _chunks(self) -> list[np.ndarray]:
        order = epoch_order(len(self.dataset), self.shuffle, self.generator, self.sampler)
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and chunks and len(chunks[-1]) < self.batch_size:
            chunks.pop()
        return chunks

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        chunks = self._chunks()
        batched = hasattr(self.dataset, "batch")
        # A dataset already on the GPU (the token cache) is gathered there, never in worker processes.
        in_process = batched and (self.num_workers == 0 or getattr(self.dataset, "on_device", False))
        # generator=: worker seeds come from it, not from the global RNG (a resume restores it).
        if in_process:
            source: Iterable = (self.dataset.batch(c) for c in chunks)
        elif batched:
            source = DataLoader(_BatchesOf(self.dataset, chunks), batch_size=None, num_workers=self.num_workers,
                                pin_memory=self.pin_memory, generator=self.generator)
        else:  # any map-style dataset: the DataLoader's per-item path
            source = DataLoader(self.dataset, batch_sampler=[c.tolist() for c in chunks],
                                num_workers=self.num_workers, pin_memory=self.pin_memory, generator=self.generator)
        for batch in source:
            batch = list(batch)
            if self.pin_memory and in_process:
                batch = [t.pin_memory() if t.device.type == "cpu" else t for t in batch]
            yield batch


def to_device(batch: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Copy a batch to the device; non-blocking, so a pinned batch overlaps the previous step."""
    return [t.to(device, non_blocking=True) for t in batch]
