"""The eval phase refuses settings it cannot run with before any phase starts."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.evaluation.step import EvalStep
from kronos_exp.pipeline import build_phases, check_objective


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["phases=all", *overrides])


@pytest.mark.parametrize("override, message", [
    ("eval.pred_len=17", "eval.pred_len=17"),
    ("eval.windows=0", "eval.windows=0"),
    ("eval.metric=crps", "eval.metric=crps"),  # needs samples; the default sample_count is 8, so set 1 below
    ("eval.top_p=0", "top_p"),
])
def test_bad_eval_settings_are_refused(override, message):
    extra = ["eval.sample_count=1"] if "crps" in override else []
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        EvalStep().check(_cfg(override, *extra))


def test_no_test_split_is_said_clearly():
    cfg = _cfg()
    cfg.data.test_ratio = 0  # allowed by the data layer in some setups (reference configs use 0.8/0.2/0)
    with pytest.raises(ValueError, match="there is no test split"):
        EvalStep().check(cfg)


def test_objective_may_name_any_reported_validation_metric():
    cfg = _cfg("objective=eval_val_rank_ic")
    check_objective(cfg, build_phases(cfg))
    cfg = _cfg("phases=both", "objective=eval_val_close_mae")
    with pytest.raises(ValueError, match="eval_val_close_mae but this run reports only"):
        check_objective(cfg, build_phases(cfg))
    cfg = _cfg("objective=eval_val_pretrained_close_mae")  # no predictor.pretrained: never reported
    with pytest.raises(ValueError, match="reports only"):
        check_objective(cfg, build_phases(cfg))


def test_a_test_metric_never_chooses():
    cfg = _cfg("objective=eval_test_close_mae")
    with pytest.raises(ValueError, match="measured on the test split, which reports and never chooses.*"
                                         "objective=eval_val_close_mae"):
        check_objective(cfg, build_phases(cfg))


def test_an_objective_by_its_old_name_is_told_the_new_one():
    cfg = _cfg("objective=eval_close_mae")
    with pytest.raises(ValueError, match="named by their split now; the validation split's is objective=eval_val_close_mae"):
        check_objective(cfg, build_phases(cfg))


def test_phases_all_chooses_by_the_validation_split_by_default():
    from kronos_exp.config import objective_metric
    assert objective_metric(_cfg()) == "eval_val_close_mae"
    assert "eval_val_close_mae" in EvalStep().reported_metrics(_cfg())


def test_the_pretrained_comparison_needs_the_pretrained_tokenizer(tmp_path):
    cfg = _cfg(f"predictor.pretrained={tmp_path}")
    with pytest.raises(ValueError, match="tokenizer.pretrained is null: the published predictor only reads the "
                                         "codes of the tokenizer published with it"):
        EvalStep().check(cfg)
