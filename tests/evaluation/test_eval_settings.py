"""The eval phase refuses settings it cannot run with before any phase starts (kronos_exp.config.resolve),
and an objective must name a metric the run reports."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import one_error, resolve
from kronos_exp.eval_step import EvalStep
from kronos_exp.objective import objective_metrics
from kronos_exp.pipeline import build_steps, objective_problems


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["phases=all", *overrides])


def _check_objective(cfg) -> None:
    run = resolve(cfg)
    error = one_error(objective_problems(run, build_steps(cfg, run)))
    if error is not None:
        raise error


@pytest.mark.parametrize("override, message", [
    ("eval.pred_len=17", "eval.pred_len=17"),
    ("eval.windows=0", "eval.windows=0"),
    ("eval.metric=crps", "eval.metric=crps"),  # needs samples; the default sample_count is 8, so set 1 below
    ("eval.top_p=0", "top_p"),
])
def test_bad_eval_settings_are_refused(override, message):
    extra = ["eval.sample_count=1"] if "crps" in override else []
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        resolve(_cfg(override, *extra))


def test_no_test_split_is_said_clearly():
    with pytest.raises(ValueError, match="there is no test split"):
        resolve(_cfg("data.test_ratio=0"))


def test_objective_may_name_any_reported_validation_metric():
    _check_objective(_cfg("objective=eval_val_rank_ic"))
    with pytest.raises(ValueError, match="eval_val_close_mae but this run reports only"):
        _check_objective(_cfg("phases=both", "objective=eval_val_close_mae"))
    with pytest.raises(ValueError, match="reports only"):  # no predictor.pretrained: never reported
        _check_objective(_cfg("objective=eval_val_pretrained_close_mae"))


def test_a_test_metric_never_chooses():
    with pytest.raises(ValueError, match="measured on the test split, which reports and never chooses.*"
                                         "objective=eval_val_close_mae"):
        _check_objective(_cfg("objective=eval_test_close_mae"))


def test_an_objective_by_its_old_name_is_told_the_new_one():
    with pytest.raises(ValueError, match="named by their split now; the validation split's is "
                                         "objective=eval_val_close_mae"):
        _check_objective(_cfg("objective=eval_close_mae"))


def test_phases_all_chooses_by_the_validation_split_by_default():
    run = resolve(_cfg())
    assert objective_metrics(run) == ["eval_val_close_mae"]
    step = EvalStep(run.eval, published=(run.predictor.pretrained, run.tokenizer.pretrained))
    assert "eval_val_close_mae" in step.reported_metrics()
    assert "eval_val_pretrained_close_mae" not in step.reported_metrics()  # no published weights compared


def test_the_pretrained_comparison_needs_the_pretrained_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.pretrained is null: the published predictor only reads the "
                                         "codes of the tokenizer published with it"):
        resolve(_cfg(f"predictor.pretrained={tmp_path}"))
