"""The training state file runs no code when it loads: safetensors and JSON only. A pickle planted
at its path, or a truncated file, is refused with the file's name; the ``before_replace`` hook
sees the digest of exactly the bytes that replace the previous state."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from kronos_exp.errors import user_message
from kronos_exp.train.state import StateUnreadable, TrainingState

from planted_pickle import Payload, planted_pickle



def tiny_state(**kw) -> TrainingState:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    base = dict(epoch=1, batches_done=2, step=3, world_size=1, model=model.state_dict(),
                optimizer=optimizer.state_dict(), scheduler={"last_epoch": 3, "_last_lr": [0.1]}, scaler={},
                rng={"python": (3, tuple(range(5)), None), "numpy": np.random.get_state(),
                     "torch": torch.get_rng_state(), "cuda": [], "loader": torch.Generator().get_state()},
                best_val_loss=float("inf"), best_epoch=-1, val_history=[0.5], train_history=[(1, 0.25)])
    return TrainingState(**{**base, **kw})


def test_every_value_round_trips_exactly(tmp_path):
    state = tiny_state()
    state.save(tmp_path / "s.last.safetensors")
    back = TrainingState.load(tmp_path / "s.last.safetensors")
    assert back.optimizer["param_groups"] == state.optimizer["param_groups"]  # int keys, tuples (betas)
    assert all(torch.equal(a["exp_avg"], b["exp_avg"])
               for a, b in zip(state.optimizer["state"].values(), back.optimizer["state"].values()))
    assert back.rng["python"] == state.rng["python"] and back.train_history == [(1, 0.25)]
    assert back.rng["numpy"][0] == "MT19937" and np.array_equal(back.rng["numpy"][1], state.rng["numpy"][1])
    assert back.best_val_loss == float("inf") and back.scheduler == state.scheduler


def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "s.last.safetensors"
    path.write_bytes(planted_pickle(marker))
    torch.save({"x": Payload(marker)}, tmp_path / "legacy.pt")  # the old format, torch's zip pickle
    for planted in (path, tmp_path / "legacy.pt"):
        with pytest.raises(StateUnreadable, match=f"{planted} is not a readable training state") as err:
            TrainingState.load(planted)
        assert user_message(err.value).startswith(str(planted))  # the CLI prints it as one line
    assert not marker.exists()


def test_a_truncated_state_is_refused(tmp_path):
    path = tmp_path / "s.last.safetensors"
    tiny_state().save(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(StateUnreadable, match="not a readable training state"):
        TrainingState.load(path)


def test_the_digest_is_recorded_before_the_file_replaces_the_previous_one(tmp_path):
    path, seen = tmp_path / "s.last.safetensors", []
    tiny_state(step=1).save(path)
    previous = path.read_bytes()
    tiny_state(step=2).save(path, before_replace=lambda digest: seen.append((digest, path.read_bytes())))
    [(digest, on_disk_then)] = seen
    assert on_disk_then == previous and hashlib.sha256(path.read_bytes()).hexdigest() == digest
