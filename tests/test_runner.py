"""Ranks other than 0 meet rank 0 in the same sequence of broadcasts whatever a phase builds on,
and never touch the tracking store (only rank 0 has one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.evaluation.step import EvalStep
from kronos_exp.phases import PredictorPhase, TokenizerPhase
from kronos_exp.runner import RunContext, run_step
from kronos_exp.tracking.lifecycle import PhaseResult
from kronos_exp.train.distributed import World


@dataclass(frozen=True)
class ScriptedRank(World):
    """Rank 1 of 2, receiving ``replies`` as rank 0's broadcasts and recording each share."""
    replies: list = field(default_factory=list)
    shared: list = field(default_factory=list)

    def share(self, obj):
        self.shared.append(obj)
        return self.replies.pop(0)


def _context(world: World) -> RunContext:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["phases=all"])
    # runs=None: any look at the tracking store from this rank fails loudly.
    return RunContext(cfg=cfg, data=None, data_fingerprint={}, device=torch.device("cpu"), output_dir=Path("."),
                      runs=None, world=world)


def test_a_reused_phase_is_two_broadcasts_on_every_phase():
    for phase in (TokenizerPhase(), PredictorPhase()):  # with and without something to build on
        result = PhaseResult(phase.name, Path("ckpt"), "fp", 0.5, None, skipped=True)
        world = ScriptedRank(rank=1, world_size=2, replies=[None, result])
        assert run_step(phase, _context(world)) is result
        assert len(world.shared) == 2, phase.name


def test_evaluation_runs_on_rank_0_alone():
    result = PhaseResult("eval", Path("ckpt"), "fp", 0.5, None, skipped=False, metrics={"close_mae": 0.5})
    world = ScriptedRank(rank=1, world_size=2, replies=[result])
    assert run_step(EvalStep(), _context(world)) is result
    assert world.shared == [None]
