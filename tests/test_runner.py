"""Ranks other than 0 meet rank 0 in the same sequence of broadcasts whatever a phase builds on,
and never touch the tracking store (only rank 0 has one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import TRAINING_PHASES, resolve
from kronos_exp.eval_step import EvalStep
from kronos_exp.phases import PredictorPhase, TokenizerPhase
from kronos_exp.runner import RunContext, run_step
from kronos_exp.schemas import RunConfig
from kronos_exp.tracking.lifecycle import PhaseResult
from kronos_exp.train.distributed import World
from kronos_exp.window import WindowSpec


@dataclass(frozen=True)
class ScriptedRank(World):
    """Rank 1 of 2, receiving ``replies`` as rank 0's broadcasts and recording each share."""
    replies: list = field(default_factory=list)
    shared: list = field(default_factory=list)

    def share(self, obj):
        self.shared.append(obj)
        return self.replies.pop(0)


def _settings() -> RunConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return resolve(compose("config", overrides=["phases=all"]))


def _context(world: World) -> RunContext:
    run = _settings()
    # runs=None: any look at the tracking store from this rank fails loudly.
    return RunContext(data=None, data_fingerprint={}, window=WindowSpec(), device=torch.device("cpu"),
                      sections={name: getattr(run, name) for name in TRAINING_PHASES},
                      model_names={name: name for name in TRAINING_PHASES}, output_dir=Path("."), runs=None,
                      world=world)


def test_a_reused_phase_is_two_broadcasts_on_every_phase():
    run = _settings()
    for phase in (TokenizerPhase(run.tokenizer), PredictorPhase(run.predictor)):  # with and without an upstream
        result = PhaseResult(phase.name, Path("ckpt"), "fp", 0.5, None, skipped=True)
        world = ScriptedRank(rank=1, world_size=2, replies=[None, result])
        assert run_step(phase, _context(world)) is result
        assert len(world.shared) == 2, phase.name


def test_evaluation_runs_on_rank_0_alone():
    result = PhaseResult("eval", Path("ckpt"), "fp", 0.5, None, skipped=False, metrics={"close_mae": 0.5})
    world = ScriptedRank(rank=1, world_size=2, replies=[result])
    assert run_step(EvalStep(_settings().eval), _context(world)) is result
    assert world.shared == [None]
