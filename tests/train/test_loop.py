"""The shared loop: whole-batch loading, no host sync per step, validation and precision."""
from __future__ import annotations

import logging
import math
import re
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kronos_exp.data.windows import WindowDataset
from kronos_exp.train import Batches, FitSettings, evaluate, fit
from kronos_exp.train.interrupt import Interrupted
from kronos_exp.train.loop import Sums

from fit_toys import data, fit_stopping_at


def _windows(n_rows=120, lookback=8, predict=2, seed=0) -> WindowDataset:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_rows, 6)).astype(np.float32).cumsum(0)
    stamps = rng.integers(0, 7, size=(n_rows, 5)).astype(np.float32)
    return WindowDataset([values], [stamps], lookback, predict)


class Syncs(torch.Tensor):
    """A tensor that counts reads of its value on the host (item, float, tolist, bool)."""

    count = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__bool__):
            Syncs.count += 1
        return super().__torch_function__(func, types, args, kwargs or {})


class Regression:
    """Predict the last feature of each window from the others: a model + loss the loop can train."""

    val_key = "loss"

    def loss(self, model, batch):
        x, _stamp = batch
        err = (model(x[..., :5]).squeeze(-1) - x[..., 5]) ** 2
        return {"loss": err.mean().as_subclass(Syncs), "max_err": err.max().as_subclass(Syncs)}

    def epoch_metrics(self, model, loader):
        return {}


def _settings(**kw) -> FitSettings:
    base = dict(epochs=2, lr=1e-2, batch_size=8, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.1,
                grad_clip=1.0, accumulation_steps=1, log_interval=5, device=torch.device("cpu"))
    return FitSettings(**{**base, **kw})


def test_batches_equal_stacked_items_and_cover_every_window_once():
    ds = _windows()
    batches = list(Batches(ds, 16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == len(Batches(ds, 16)) == math.ceil(len(ds) / 16)
    xs = torch.cat([b[0] for b in batches])
    assert xs.shape == (len(ds), 10, 6)
    # every window exactly once, each equal to the dataset's own item
    seen = {tuple(x[0, :2].tolist()) for x in xs}
    assert len(seen) == len(ds)
    first = batches[0]
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:16]
    for j, i in enumerate(order.tolist()):
        x, stamp = ds[i]
        assert torch.equal(first[0][j], x) and torch.equal(first[1][j], stamp)


def test_batches_drop_last_sampler_and_workers():
    ds = _windows()
    assert all(len(b[0]) == 16 for b in Batches(ds, 16, drop_last=True))
    assert len(Batches(ds, 16, drop_last=True)) == len(ds) // 16
    picked = list(Batches(ds, 4, sampler=[5, 1, 3]))  # e.g. a DistributedSampler's share
    assert torch.equal(picked[0][0], ds.batch([5, 1, 3])[0]) and len(picked) == 1
    in_workers = list(Batches(ds, 16, num_workers=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(in_workers, Batches(ds, 16)))


def test_the_loop_reads_losses_on_the_host_only_at_log_lines_and_validation():
    torch.manual_seed(0)
    model, train, val = nn.Linear(5, 1), _windows(200), _windows(60, seed=1)
    s = _settings(log_interval=5)
    logged = []
    Syncs.count = 0
    result = fit(model, Regression(), train, val, s, log_metrics=lambda m, step: logged.append(m),
                 on_best=lambda *a: None)
    steps_per_epoch = len(train) // 8
    assert result.steps == 2 * steps_per_epoch > 20
    # one read per log line (every 5 steps and at each epoch end) and one per validation pass, not per step
    assert 0 < Syncs.count <= len(logged) < result.steps
    assert result.val_history[-1] < result.val_history[0] or result.val_history[0] < 1.0


def test_validation_means_are_sample_weighted():
    model, val = nn.Linear(5, 1), _windows(60, seed=1)
    s = _settings(batch_size=7)  # 51 windows: a last batch of 2
    means = evaluate(model, Regression(), Batches(val, 7), s)
    x, _ = val.batch(np.arange(len(val)))
    with torch.no_grad():
        expected = ((model(x[..., :5]).squeeze(-1) - x[..., 5]) ** 2).mean().item()
    assert means["loss"] == pytest.approx(expected, rel=1e-5)


def test_sums_weights_and_means():
    sums = Sums()
    sums.add({"a": torch.tensor(1.0)}, 3)
    sums.add({"a": torch.tensor(3.0)}, 1)
    assert sums.means() == {"a": pytest.approx(1.5)}


def test_compile_falls_back_to_eager_with_one_warning():
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    model, train, val = nn.Linear(5, 1), _windows(60), _windows(40, seed=1)
    # A machine whose C++ compiler is broken; inductor's own patch puts its setting back after (monkeypatch's
    # undo left it unset, and the next test's compile fell back too).
    with inductor.patch({"cpp.cxx": ("/bin/false",)}), \
            pytest.warns(RuntimeWarning, match="compile=true failed") as caught:
        result = fit(model, Regression(), train, val, _settings(compile=True), log_metrics=lambda *a: None,
                     on_best=lambda *a: None)
    torch._dynamo.reset()
    assert len([w for w in caught if "compile=true failed" in str(w.message)]) == 1
    assert result.steps > 1 and math.isfinite(result.best_val_loss)



def test_compile_compiles_the_training_step_and_validates_eagerly():
    """With compile=true validation runs the eager model: its no-grad graph and its last partial
    batch would each recompile, costing more than compiled validation saves."""
    from torch._dynamo.eval_frame import OptimizedModule

    seen = {True: set(), False: set()}

    class Recording(Regression):
        def loss(self, model, batch):
            seen[torch.is_grad_enabled()].add(isinstance(model, OptimizedModule))
            return super().loss(model, batch)

    torch._dynamo.reset()
    model, train, val = nn.Linear(5, 1), _windows(60), _windows(37, seed=1)  # 27 val windows: a partial batch
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compile=true failed")  # compiled, not fallen back to eager
        result = fit(model, Recording(), train, val, _settings(compile=True), log_metrics=lambda *a: None,
                     on_best=lambda *a: None)
    assert math.isfinite(result.best_val_loss)
    assert True in seen[True] and seen[False] == {False}  # training called the compiled module


class SlowWhileTraining(nn.Module):
    """``inner``, sleeping ``pause`` s per training forward: an epoch made slow on purpose."""

    def __init__(self, inner: nn.Module, pause: float):
        super().__init__()
        self.inner, self.pause = inner, pause

    def forward(self, x):
        if self.training and self.pause:
            time.sleep(self.pause)
        return self.inner(x)


def _epoch_rates(records) -> list[float]:
    return [float(re.search(r"(\d+) samples/s", r.getMessage()).group(1)) for r in records
            if "samples/s" in r.getMessage()]


def test_an_epochs_samples_per_second_is_its_own_rate_not_the_phases_running_average(caplog):
    """A first epoch slowed on purpose leaves the second epoch's rate (log line and metric) alone;
    the phase's overall rate stays in the result."""
    torch.manual_seed(0)
    model = SlowWhileTraining(nn.Linear(5, 1), pause=0.05)
    rate_at = {}  # global step -> the samples_per_second metric logged there

    def log_metrics(metrics, step):
        if "samples_per_second" in metrics:
            rate_at[step] = metrics["samples_per_second"]
        if "val_loss" in metrics:
            model.pause = 0  # only the first epoch is slow

    train = _windows(200)
    steps_per_epoch = len(train) // 8
    with caplog.at_level(logging.INFO, logger="kronos_exp.train.loop"):
        result = fit(model, Regression(), train, _windows(60, seed=1), _settings(log_interval=5), log_metrics,
                     on_best=lambda *a: None)
    first, second = _epoch_rates(caplog.records)
    assert second > 3 * first, (first, second)  # ~23 pauses of 50 ms against a few ms of work
    at_epoch_end = [rate_at[steps_per_epoch], rate_at[2 * steps_per_epoch]]  # each epoch's last log line
    assert at_epoch_end == pytest.approx([first, second], rel=0.2, abs=1)  # the line's rate is the metric's
    assert result.samples_per_second < second / 2  # the phase's: both epochs, the slow one included


def test_a_resumed_epochs_rate_counts_only_what_this_process_trained(tmp_path, caplog):
    """Slow steps before a stop, fast ones after the resume: the resumed epoch's rate is the fast one."""
    s = _settings(epochs=1, batch_size=4, log_interval=1, state_path=tmp_path / "last.pt", resume=True)
    with pytest.raises(Interrupted):
        fit_stopping_at(SlowWhileTraining(nn.Linear(4, 1), pause=0.2), s, data(80, 4), data(12, 4),
                        stop_at_step=5)
    with caplog.at_level(logging.INFO, logger="kronos_exp.train.loop"):
        result = fit_stopping_at(SlowWhileTraining(nn.Linear(4, 1), pause=0), s, data(80, 4), data(12, 4))
    assert result.resumed_at_step == 5
    # At most 100 samples/s: 5 steps of 4 samples, each pausing 200 ms. Counted with them, the epoch's
    # rate would be below 80; the 15 fast steps alone run at thousands a second, even on a busy machine.
    before_stop = 5 * 4 / 0.2
    (resumed,) = _epoch_rates(caplog.records)
    assert resumed > 3 * before_stop, resumed
