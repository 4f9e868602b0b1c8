"""Early stopping (issue 29, item 3): a phase whose validation loss stops improving ends after
``patience`` such epochs with its best checkpoint, resumes to the same end, names its stop epoch in
MLflow and the summary, and is in the fingerprint only when it is on."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kronos_exp.config import resolve
from kronos_exp.errors import ConfigError
from kronos_exp.runner import RunContext
from kronos_exp.tracking import fingerprint
from kronos_exp.train import FitSettings, fit
from kronos_exp.train.interrupt import Interrupted
from kronos_exp.train.loop import epochs_without_improvement

from fit_toys import Regression, fit_stopping_at
from harness import compose


def _data(n: int, sign: float) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, sign * x.sum(-1, keepdim=True))


# Trained on y = sum(x), validated on y = -sum(x): the better it fits, the worse it validates, as the
# issue's predictor did (1.909 -> 1.977 -> 2.060).
TRAIN, RISING_VAL = _data(32, 1.0), _data(8, -1.0)


def _settings(tmp_path: Path | None = None, **kw) -> FitSettings:
    base = dict(epochs=6, lr=1e-2, batch_size=4, weight_decay=0.0, adam_betas=(0.9, 0.95), pct_start=0.3,
                grad_clip=1.0, accumulation_steps=1, log_interval=1, device=torch.device("cpu"), seed=3)
    if tmp_path is not None:
        base.update(state_path=tmp_path / "m.last.safetensors", checkpoint_every_steps=3)
    return FitSettings(**{**base, **kw})


def _fit(s: FitSettings, val=RISING_VAL, stop_at_step=None, logged=None):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, fit_stopping_at(model, s, TRAIN, val, stop_at_step, logged)


def test_a_rising_validation_loss_runs_every_epoch_without_early_stopping():
    """The finding: nothing stops a phase whose validation loss rises from its first epoch."""
    _, result = _fit(_settings())
    assert len(result.val_history) == 6 and result.stopped_epoch is None
    assert all(b > a for a, b in zip(result.val_history, result.val_history[1:])), result.val_history


def test_it_stops_after_patience_epochs_without_improvement_keeping_the_best():
    saved, heard = [], []
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    result = fit(model, Regression(), TRAIN, RISING_VAL, _settings(patience=2), lambda m, step: None,
                 on_best=lambda m, epoch, loss: saved.append(epoch),
                 on_epoch_end=lambda epoch, loss, last: heard.append((epoch, last)))
    assert len(result.val_history) == 3 and result.stopped_epoch == 2  # epoch 1 best, then 2 without improving
    assert result.best_epoch == 0 and saved == [0]  # the checkpoint kept is the first epoch's
    assert result.best_val_loss == result.val_history[0] == min(result.val_history)
    # A pruner hears every epoch that trained, none after the stop, and which was the last (never pruned).
    assert heard == [(0, False), (1, False), (2, True)]


def test_an_improving_loss_runs_every_epoch():
    _, result = _fit(_settings(epochs=3, patience=1), val=TRAIN)
    assert len(result.val_history) == 3 and result.stopped_epoch is None


def test_a_pruner_still_stops_a_phase_that_early_stopping_would_run_on():
    class Pruned(Exception):
        pass

    def prune(epoch, loss, last):
        if epoch == 1:
            raise Pruned

    torch.manual_seed(0)
    with pytest.raises(Pruned):
        fit(nn.Linear(4, 1), Regression(), TRAIN, RISING_VAL, _settings(patience=3), lambda m, step: None,
            on_best=lambda *a: None, on_epoch_end=prune)


@pytest.mark.parametrize("history, min_delta, waited", [
    ([], 0.0, 0),
    ([1.0, 0.9, 0.8], 0.0, 0),
    ([1.0, 1.1, 1.2], 0.0, 2),
    ([1.0, 1.0], 0.0, 1),  # equal is no improvement
    ([1.0, 0.95, 0.94], 0.1, 2),  # better, but not by more than min_delta
    ([1.0, 0.8, 0.9], 0.1, 1),
    ([math.nan, math.nan], 0.0, 2),  # a loss that is never finite never improves
    ([math.nan, 2.0, math.inf], 0.0, 1),
])
def test_epochs_without_improvement(history, min_delta, waited):
    assert epochs_without_improvement(history, min_delta) == waited


def test_a_fit_stopped_mid_epoch_resumes_to_the_same_early_stop(tmp_path):
    reference, expected = _fit(_settings(tmp_path / "ref", patience=2))
    assert expected.stopped_epoch == 2
    with pytest.raises(Interrupted):  # 8 steps per epoch: step 11 is in the second epoch, after one validation
        _fit(_settings(tmp_path / "run", patience=2), stop_at_step=11)
    resumed, result = _fit(_settings(tmp_path / "run", patience=2, resume=True))
    assert result.resumed_at_step is not None and result.stopped_epoch == 2
    assert (result.val_history, result.best_epoch, result.steps) == (expected.val_history, 0, expected.steps)
    assert torch.equal(resumed.weight, reference.weight) and torch.equal(resumed.bias, reference.bias)


def test_a_state_saved_after_the_stop_resumes_to_the_stop_without_training(tmp_path):
    """Killed between the stop and the registration: the rerun trains no further epoch."""
    s = _settings(tmp_path, patience=1)
    _, first = _fit(s)
    assert first.stopped_epoch == 1
    logged = []
    _, again = _fit(dataclasses.replace(s, resume=True), logged=logged)
    assert again.stopped_epoch == 1 and again.steps == first.steps and again.val_history == first.val_history
    assert logged == []  # no step trained, no epoch validated


# -- settings, fingerprint -------------------------------------------------------------------------

def _run(*overrides: str):
    cfg = compose("phases=both", *overrides, hydra_config=False)
    return resolve(cfg)


def _inputs(run, phase: str = "predictor") -> dict:
    ctx = RunContext(data=None, data_fingerprint={"files": ["f"], "config": {}}, window=None,
                     sections={"tokenizer": run.tokenizer, "predictor": run.predictor}, model_names={},
                     device=torch.device("cpu"), output_dir=Path("."))
    return ctx.fingerprint_inputs(phase, {"tokenizer_fingerprint": "t"} if phase == "predictor" else None)


def test_off_by_default_and_then_out_of_the_fingerprint():
    run = _run()
    for phase in ("tokenizer", "predictor"):
        assert getattr(run, phase).early_stopping.patience is None
        assert "early_stopping" not in _inputs(run, phase)["settings"]  # the fingerprints it always had
    # min_delta does nothing while early stopping is off
    assert fingerprint(_inputs(_run("predictor.early_stopping.min_delta=0.5"))) == fingerprint(_inputs(run))


def test_on_it_is_in_the_fingerprint():
    off = fingerprint(_inputs(_run()))
    on = _inputs(_run("predictor.early_stopping.patience=2"))
    assert on["settings"]["early_stopping"] == {"patience": 2, "min_delta": 0.0}
    other = _inputs(_run("predictor.early_stopping.patience=2", "predictor.early_stopping.min_delta=0.01"))
    assert len({off, fingerprint(on), fingerprint(other)}) == 3
    assert fingerprint(_inputs(_run("predictor.early_stopping.patience=2"), "tokenizer")) == fingerprint(
        _inputs(_run(), "tokenizer"))  # the predictor's setting is not the tokenizer's


@pytest.mark.parametrize("override, message", [
    ("predictor.early_stopping.patience=0", "predictor.early_stopping.patience=0; valid: an integer >= 1, or null"),
    ("tokenizer.early_stopping.min_delta=-0.1", "tokenizer.early_stopping.min_delta=-0.1; valid: a finite number >= 0"),
    ("predictor.early_stopping.min_delta=inf", "predictor.early_stopping.min_delta=inf; valid: a finite number >= 0"),
    ("+predictor.early_stopping.monitor=val_loss", "unknown key predictor.early_stopping.monitor; "
                                                   "predictor.early_stopping has min_delta, patience"),
])
def test_bad_settings_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        _run(override)
    assert str(err.value).startswith(message), err.value


# -- a phase run, in this process, against a real MLflow store ------------------------------------

def test_an_early_stopped_phase_logs_its_stop_and_registers_its_best_checkpoint(pipeline):
    # min_delta larger than any loss: the first epoch improves (on nothing), the second cannot.
    out = pipeline.run("phases=tokenizer", "tokenizer.epochs=4", "tokenizer.early_stopping.patience=1",
                       "tokenizer.early_stopping.min_delta=1000", "data.max_train_windows=64",
                       "data.max_eval_windows=16", fast=False)
    phase = pipeline.by_phase()["tokenizer"]
    client = pipeline.client()
    assert [m.step for m in client.get_metric_history(phase.info.run_id, "val_loss")] == [0, 1]
    assert phase.data.metrics["stopped_epoch"] == 1
    assert phase.data.params["tokenizer.early_stopping.patience"] == "1"
    [job] = [r for r in pipeline.runs() if "phase" not in r.data.tags]
    assert job.data.tags["tokenizer_stopped_epoch"] == "1"
    assert "stopped early after epoch 2/4 (patience 1)" in out.stdout, out.stdout[-3000:]
    [version] = pipeline.versions("kronos-tokenizer")
    assert float(version.tags["best_val_loss"]) == phase.data.metrics["best_val_loss"]
