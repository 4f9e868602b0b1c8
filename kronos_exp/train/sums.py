"""Weighted sums of loss components on the device, and their sum over every rank under torchrun."""
from __future__ import annotations

import torch

from .distributed import World, all_reduce_sum


class Sums:
    """Weighted sums of loss components kept on the device; ``means()`` is the only host sync."""

    def __init__(self) -> None:
        self.totals: dict[str, torch.Tensor] = {}
        self.weight = 0

    def add(self, parts: dict[str, torch.Tensor], weight: int = 1) -> None:
        for k, v in parts.items():
            v = v.detach().float() * weight
            self.totals[k] = self.totals[k] + v if k in self.totals else v
        self.weight += weight

    def means(self) -> dict[str, float]:
        if not self.totals:
            return {}
        keys = list(self.totals)
        values = (torch.stack([self.totals[k] for k in keys]) / max(self.weight, 1)).tolist()
        return dict(zip(keys, values))

    def all_reduce(self, world: World, device: torch.device) -> "Sums":
        """The sums over every rank (each held a shard of the batches). Every rank takes part, one
        that summed nothing too (a validation shard is empty when there are fewer windows than
        processes): it adds zeros to the components rank 0 names (rank 0 holds the first window)."""
        if not world.distributed:
            return self
        keys = world.share(list(self.totals))
        zero = torch.zeros((), device=device)
        reduced = all_reduce_sum(torch.stack([self.totals.get(k, zero) for k in keys] + [
            torch.tensor(float(self.weight), device=device)]))
        out = Sums()
        out.totals, out.weight = dict(zip(keys, reduced[:-1])), int(reduced[-1].item())
        return out

    def state_dict(self) -> dict:
        return {"totals": {k: v.cpu() for k, v in self.totals.items()}, "weight": self.weight}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "Sums":
        sums = cls()
        sums.totals, sums.weight = {k: v.to(device) for k, v in state["totals"].items()}, state["weight"]
        return sums
