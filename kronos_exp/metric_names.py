"""The names of the metrics a run reports and which way each improves, in one module that imports
nothing of the package: the evaluation metrics, the config's objective checks and the sweep
table all read it."""
from __future__ import annotations

# Lower is better; skill = 1 - metric / baseline's metric (1 = perfect, 0 = no better, < 0 worse).
ERROR_METRICS = ("close_mae", "close_rmse", "close_mape", "crps")
# Higher is better; compared with the baseline as a difference ("<name>_excess").
SCORE_METRICS = ("direction_accuracy",)
CORRELATION_METRICS = ("ic", "rank_ic")
INTERVAL_METRICS = ("coverage_10_90",)
POINT_METRICS = ("close_mae", "close_rmse", "close_mape", "direction_accuracy", "ic", "rank_ic")
SAMPLE_METRICS = ("crps", "coverage_10_90")  # need sample_count > 1
# Names that end so are better higher: a skill or an excess over a baseline, a score, a correlation.
HIGHER_IS_BETTER = ("skill", "excess", *SCORE_METRICS, *CORRELATION_METRICS)


def maximised(name: str) -> bool | None:
    """Whether a reported metric is better higher (True) or lower (False), by how its name ends:
    ``eval_val_ic``, ``eval_val_drift_close_mae_skill`` -> True; ``eval_val_close_mae``, ``tokenizer_val_loss``
    -> False. None for a band's coverage, which has no better direction (a calibrated 10-90% band
    covers 80%, so neither more nor less is better). Any other name counts as an error (False)."""
    def ends_with(words: tuple[str, ...]) -> bool:
        return any(name == w or name.endswith(f"_{w}") for w in words)

    return True if ends_with(HIGHER_IS_BETTER) else None if ends_with(INTERVAL_METRICS) else False


NOMINAL_COVERAGE = 0.8  # of the 10-90% band (data.frame.BAND)


def ranking_value(name: str, value: float) -> float:
    """``value`` turned so that lower is better: negated where higher is better, a band's coverage as
    its distance from the nominal 0.8."""
    direction = maximised(name)
    return -value if direction else abs(value - NOMINAL_COVERAGE) if direction is None else value
