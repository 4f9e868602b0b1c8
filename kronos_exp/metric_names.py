"""The names of the metrics a run reports and which way each improves, in one module that imports
nothing of the package: the evaluation metrics, the config's objective checks and the sweep
table all read it."""
from __future__ import annotations

# A sampled forecast's band: its lower and upper quantile (coverage, forecast tables, fan charts).
BAND = (0.1, 0.9)
# The share of actuals a calibrated band covers, and the metric that measures it ("coverage_10_90").
NOMINAL_COVERAGE = round(BAND[1] - BAND[0], 12)
COVERAGE = f"coverage_{round(100 * BAND[0])}_{round(100 * BAND[1])}"
# |coverage - NOMINAL_COVERAGE|: how far the band is from calibrated, a metric that improves lower
# (coverage itself has no better direction, so it cannot be searched or ranked by its own value).
COVERAGE_ERROR = "coverage_error"

# Lower is better; skill = 1 - metric / the last value's metric (1 = perfect, 0 = no better, < 0 worse).
ERROR_METRICS = ("close_mae", "close_rmse", "close_mape", "crps")
# Higher is better; compared with the drift forecast as a difference ("<name>_excess").
SCORE_METRICS = ("direction_accuracy",)
CORRELATION_METRICS = ("ic", "rank_ic")
INTERVAL_METRICS = (COVERAGE,)
POINT_METRICS = ("close_mae", "close_rmse", "close_mape", "direction_accuracy", "ic", "rank_ic")
SAMPLE_METRICS = ("crps", COVERAGE, COVERAGE_ERROR)  # need sample_count > 1
# Facts about the actuals, the same for every forecaster, reported beside the metrics but never an
# objective: the share of flat steps (excluded from direction accuracy) and the zero actuals MAPE skips.
ACTUAL_FACTS = ("flat_share", "close_mape_skipped")
# Names that end so are better higher: a skill or an excess over a baseline, a score, a correlation.
HIGHER_IS_BETTER = ("skill", "excess", *SCORE_METRICS, *CORRELATION_METRICS)


def _ends_with(name: str, words: tuple[str, ...]) -> bool:
    return any(name == w or name.endswith(f"_{w}") for w in words)


def maximised(name: str) -> bool | None:
    """Whether a reported metric is better higher (True) or lower (False), by how its name ends:
    ``eval_val_ic``, ``eval_val_drift_close_mae_skill`` -> True; ``eval_val_close_mae``, ``tokenizer_val_loss``
    -> False. None for a band's coverage, which has no better direction (a calibrated 10-90% band
    covers 80%, so neither more nor less is better). Any other name (a loss, an error, a fact such as
    ``flat_share``) counts as lower-is-better (False)."""
    return True if _ends_with(name, HIGHER_IS_BETTER) else None if _ends_with(name, INTERVAL_METRICS) else False


def ranking_value(name: str, value: float) -> float:
    """A reported metric's value turned into "lower is better", for ranking versions or jobs by it:
    -value for a maximised metric, the distance from the nominal coverage for a band's coverage
    (0.8 ranks best, 0.7 and 0.9 tie), the value itself otherwise."""
    better_higher = maximised(name)
    if better_higher is None:
        return abs(value - NOMINAL_COVERAGE)
    return -value if better_higher else value

# The words of a verdict on the model against another forecaster (evaluation.verdicts), as tags,
# summary lines and (short) the sweep's table say them.
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
TOO_FEW = "too few origins for a verdict"
UNTESTED = "no test: not a mean of per-date losses"
SHORT_VERDICTS = {NO_DIFFERENCE: "n.s.", TOO_FEW: "too few", UNTESTED: "no test"}
MIN_DATES = 5  # fewer origin dates and no verdict is given: the test would have next to no power
