"""The `last` training state: a stopped fit, resumed, ends with the weights of one never stopped."""
import math

import pytest
import torch
from torch import nn

from kronos_exp.train import FitSettings
from kronos_exp.train.interrupt import Interrupted
from kronos_exp.train.state import TrainingState

from fit_toys import data, fit_stopping_at


class Noisy(nn.Module):
    """Dropout draws from the global RNG, so a resume that loses RNG state shows in the weights."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def settings(tmp_path, **kw):
    base = dict(epochs=3, lr=1e-2, batch_size=4, weight_decay=0.1, adam_betas=(0.9, 0.95), pct_start=0.3,
                grad_clip=1.0, accumulation_steps=2, log_interval=1, device=torch.device("cpu"), seed=7,
                state_path=tmp_path / "m.last.pt", checkpoint_every_steps=3)
    return FitSettings(**{**base, **kw})


def train(s, stop_at_step=None):
    torch.manual_seed(0)
    model, logged = Noisy(), []
    return model, fit_stopping_at(model, s, data(40, 4), data(12, 4), stop_at_step, logged), logged


def test_resumed_fit_equals_uninterrupted(tmp_path):
    reference, ref_result, _ = train(settings(tmp_path / "ref"))
    with pytest.raises(Interrupted):
        train(settings(tmp_path / "run"), stop_at_step=7)  # mid-epoch 2 (5 steps per epoch)
    state = TrainingState.load(tmp_path / "run" / "m.last.pt")
    assert (state.epoch, state.batches_done, state.step) == (1, 4, 7)
    resumed, result, logged = train(settings(tmp_path / "run", resume=True))
    assert result.resumed_at_step == 7
    assert [s for s, keys in logged if "train_loss" in keys] == list(range(8, 16))  # steps continue, no repeats
    assert result.steps == ref_result.steps == 15
    assert result.val_history == ref_result.val_history
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_state_is_replaced_atomically(tmp_path):
    s = settings(tmp_path, epochs=1)
    train(s)
    state = TrainingState.load(s.state_path)
    assert (state.epoch, state.batches_done, state.step) == (1, 0, 5)
    assert math.isfinite(state.best_val_loss) and set(state.rng) == {"python", "numpy", "torch", "cuda", "loader"}
    assert not s.state_path.with_name(s.state_path.name + ".tmp").exists()


def test_resume_needs_the_same_world_size(tmp_path):
    s = settings(tmp_path, epochs=1)
    train(s)
    state = TrainingState.load(s.state_path)
    state.world_size = 2
    state.save(s.state_path)
    with pytest.raises(ValueError, match="saved by 2 process"):
        train(settings(tmp_path, epochs=2, resume=True))
