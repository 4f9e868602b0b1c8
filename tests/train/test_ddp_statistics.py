"""Issue 19.6: two processes with batch 8 train what one process with batch 16 trains. The
gradient (float64, dropout off) of both phases' losses averaged over 2 gloo ranks equals one
process's over the same 16 windows, the tokenizer's codebook entropy included; and the ranks draw
their own dropout and sampling noise from identical initial weights, each getting its own
generators back on resume. One torchrun of two real gloo processes on the CPU serves every check."""
from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fit_toys import Regression, data, torchrun_two
from torch.nn.parallel import DistributedDataParallel

from kronos_exp.schemas import TokenizerConfig
from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.model.losses import predictor_loss
from kronos_exp.phases.tokenizer import TokenizerPhase
from kronos_exp.train import FitSettings, fit
from kronos_exp.train.distributed import World
from kronos_exp.train.state import seed_everything

pytestmark = pytest.mark.ddp


# Tiny float64 models, every dropout off; gamma > 0, so the codebook entropy counts.
TOKENIZER = dict(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, ffn_dropout_p=0.0,
                 attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4, beta=0.05, gamma0=1.0, gamma=1.1,
                 zeta=0.05, group_size=4)
PREDICTOR = dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=16, n_heads=2, ff_dim=32, ffn_dropout_p=0.0,
                 attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)
GLOBAL_BATCH, TIME = 16, 9


def _stamp(g: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randint(0, h, (GLOBAL_BATCH, TIME), generator=g) for h in (60, 24, 7, 32, 13)], -1)


def _gradients(model: torch.nn.Module, loss, world: World) -> dict[str, torch.Tensor]:
    """The gradient of ``loss(module)`` in train mode: through DDP (averaged over ranks) under torchrun."""
    model = model.double()
    trained = DistributedDataParallel(model) if world.distributed else model
    trained.train()
    loss(trained)["loss"].backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def phase_gradients(world: World) -> dict[str, dict[str, torch.Tensor]]:
    """Each phase's gradient over this rank's share of the 16 windows (all 16 in a world of one)."""
    g = torch.Generator().manual_seed(7)
    x, stamp = torch.randn(GLOBAL_BATCH, TIME, 6, generator=g, dtype=torch.float64), _stamp(g).double()
    s1, s2 = (torch.randint(0, 16, (GLOBAL_BATCH, TIME), generator=g) for _ in range(2))
    rows = slice(world.rank * GLOBAL_BATCH // world.world_size, (world.rank + 1) * GLOBAL_BATCH // world.world_size)
    torch.manual_seed(0)
    tokenizer = _gradients(KronosTokenizer(**TOKENIZER), lambda m: TokenizerPhase(TokenizerConfig()).loss(m, (x[rows], stamp[rows])),
                           world)
    torch.manual_seed(0)
    predictor = _gradients(Kronos(**PREDICTOR),
                           lambda m: predictor_loss(m, s1[rows], s2[rows], stamp[rows], teacher_forcing=True), world)
    return {"tokenizer": tokenizer, "predictor": predictor}


class RecordingNoise(Regression):
    """The regression loss, recording at each call a dropout mask and a sampled draw from the
    global generators (those the models' dropout and s1 sampling use)."""

    def __init__(self):
        self.draws: list[torch.Tensor] = []

    def loss(self, model, batch):
        if model.training:
            self.draws.append(torch.cat([F.dropout(torch.ones(32), 0.5, training=True),
                                         torch.multinomial(torch.ones(64), 4).double()]))
        return super().loss(model, batch)


def noise_draws(world: World, state_path: Path | None = None, stop_at_step: int | None = None,
                resume: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(initial weights, each step's noise) of a 3-epoch fit built from seed 0, optionally stopped
    at step ``stop_at_step`` (by SIGTERM, as a user would: its state saved) or resumed from
    ``state_path``."""
    seed_everything(0)
    model = torch.nn.Linear(4, 1)
    weights = model.weight.detach().clone()
    s = FitSettings(epochs=3, lr=1e-2, batch_size=4, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.1,
                    grad_clip=1.0, accumulation_steps=1, log_interval=1, device=torch.device("cpu"), world=world,
                    state_path=state_path, resume=resume)
    objective = RecordingNoise()

    def log_metrics(metrics, step):
        if step == stop_at_step and "train_loss" in metrics:
            os.kill(os.getpid(), signal.SIGTERM)  # on every rank: they stop at this step, saving the state

    try:
        fit(model, objective, data(32, 4), data(8, 4), s, log_metrics, on_best=lambda *a: None)
    except KeyboardInterrupt:
        pass
    return weights, objective.draws


_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from kronos_exp.train.distributed import World, start
    sys.path.insert(0, {tests!r})
    from fit_toys import end_rank
    from test_ddp_statistics import noise_draws, phase_gradients

    world = World.from_env()
    start(world, torch.device("cpu"), "gloo")
    state = Path("last.safetensors")  # rank 0 writes it; every rank reads it
    weights, draws = noise_draws(world)
    stopped = noise_draws(world, state, stop_at_step=3)[1]
    resumed = noise_draws(world, state, resume=True)[1]
    torch.save({{"gradients": phase_gradients(world), "weights": weights, "draws": draws,
                "stopped": stopped, "resumed": resumed}}, f"rank{{world.rank}}.pt")
    end_rank()
""")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of two gloo processes computed."""
    folder = tmp_path_factory.mktemp("ddp")
    torchrun_two(_SCRIPT.format(tests=str(Path(__file__).parent)), folder, timeout=170)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.parametrize("phase", ["tokenizer", "predictor"])
def test_two_ranks_of_8_have_the_gradient_of_one_process_of_16(ranks, phase):
    one = phase_gradients(World())[phase]
    for rank in ranks:  # DDP leaves the averaged gradient on every rank
        two = rank["gradients"][phase]
        assert two.keys() == one.keys()
        diff = torch.sqrt(sum(((two[k] - one[k]) ** 2).sum() for k in one))
        norm = torch.sqrt(sum((one[k] ** 2).sum() for k in one))
        assert diff / norm < 1e-12, f"{phase}: relative difference {float(diff / norm):.2e}"


def test_ranks_start_from_the_same_weights_and_draw_their_own_noise(ranks):
    first, second = ranks
    assert torch.equal(first["weights"], second["weights"])
    assert len(first["draws"]) == len(second["draws"]) == 12  # 3 epochs x 4 batches of 4 per rank
    assert all(not torch.equal(a, b) for a, b in zip(first["draws"], second["draws"]))
    # Rank 0 draws what a single process draws (a single process's numbers are unchanged).
    _, alone = noise_draws(World())
    assert torch.equal(first["draws"][0], alone[0])


def test_each_rank_resumes_its_own_noise(ranks):
    for rank in ranks:  # stopped after step 3, resumed: the noise of a run never stopped
        assert len(rank["stopped"]) == 3
        resumed = rank["stopped"] + rank["resumed"]
        assert len(resumed) == len(rank["draws"])
        assert all(torch.equal(a, b) for a, b in zip(resumed, rank["draws"]))
