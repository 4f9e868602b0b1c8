"""The loop on CUDA: bf16 training, pinned batches, the device of a local rank, and a resume that
restores the CUDA generator. No MLflow, no Hydra: these run where only torch is installed.

    python -m pytest -q -m gpu tests/train/
"""
import pytest
import torch
from torch import nn

from kronos_exp.train import Batches, FitSettings
from kronos_exp.train.distributed import World, device_for
from kronos_exp.train.interrupt import Interrupted
from kronos_exp.train.state import TrainingState

from fit_toys import data, fit_stopping_at

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def settings(tmp_path, **kw):
    base = dict(epochs=3, lr=1e-2, batch_size=8, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.3,
                grad_clip=1.0, accumulation_steps=1, log_interval=1, device=torch.device("cuda"), seed=3,
                state_path=tmp_path / "m.last.pt", checkpoint_every_steps=2)
    return FitSettings(**{**base, **kw})


def train(s, stop_at_step=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Dropout(0.2), nn.GELU(), nn.Linear(64, 1))
    return model, fit_stopping_at(model, s, data(96, 8), data(32, 8), stop_at_step)


def test_bf16_fit_on_cuda_learns(tmp_path):
    model, result = train(settings(tmp_path, precision="bf16", epochs=4))
    assert next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.float32  # autocast lowers matmuls, not the weights
    assert result.val_history[-1] < result.val_history[0]
    assert TrainingState.load(tmp_path / "m.last.pt").rng["cuda"]  # the CUDA generator is saved


def test_resume_on_cuda_matches_an_uninterrupted_run(tmp_path):
    reference, _ = train(settings(tmp_path / "ref"))
    with pytest.raises(Interrupted):
        train(settings(tmp_path / "run"), stop_at_step=17)
    resumed, result = train(settings(tmp_path / "run", resume=True))
    assert result.resumed_at_step == 17
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_batches_come_pinned_and_each_local_rank_gets_its_device():
    batch = next(iter(Batches(data(16, 8), 4, pin_memory=True)))
    assert all(t.is_pinned() for t in batch)
    assert device_for(World(rank=0, world_size=2, local_rank=0), torch.device("cuda")) == torch.device("cuda", 0)


def test_raw_windows_are_batched_on_the_gpu(tmp_path):
    """The tokenizer phase's windows: gathered and normalized on the card, no host copy per batch."""
    import numpy as np

    from kronos_exp.data.windows import WindowDataset
    from kronos_exp.train.loop import make_loaders
    from kronos_exp.train.distributed import EpochSampler

    rng = np.random.default_rng(0)
    windows = WindowDataset([rng.normal(size=(80, 6)).astype(np.float32).cumsum(0)],
                            [rng.integers(0, 7, size=(80, 5)).astype(np.float32)], 8, 2)
    s = settings(tmp_path)
    train, val = make_loaders(windows, windows, s, EpochSampler(windows, s.world, 0), torch.Generator())
    for batch in (next(iter(train)), next(iter(val))):
        assert all(t.device.type == "cuda" for t in batch)
    x, _ = next(iter(val))
    torch.testing.assert_close(x.cpu(), windows.batch(range(len(x)))[0], rtol=0, atol=1e-6)
