"""docs/evaluation.md's tables of an eval run's test metrics name metrics the eval run logs: each
filled cell is the metric its column header names for its row (on the session's trained store,
whose predictor was fine-tuned from published-layout weights, so every forecaster is there)."""
from __future__ import annotations

import re

from harness import page


def _tables() -> list[list[list[str]]]:
    text = page("evaluation")
    section = text[text.index("The eval run's test metrics, arranged side by side"):text.index("How to read it")]
    tables, rows = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            tables.append([r for r in rows if not set("".join(r)) <= set("-: ")])
            rows = []
    return tables


def test_each_cell_is_a_metric_the_eval_run_logs(trained_store):
    run = next(r for r in trained_store.runs() if r.data.tags.get("phase") == "eval")
    logged = set(run.data.metrics)
    scores, trading = _tables()
    for row in scores[1:]:
        name = row[0].strip("`")
        for header, cell in zip(scores[0][1:], row[1:]):
            if cell == "-":
                continue
            pattern = re.search(r"`(test_[^`]+)`", header).group(1)
            metric = pattern.replace("<m>", name)
            if name == "direction_accuracy" and metric.endswith("_skill"):
                metric = "test_direction_accuracy_excess"  # as the page says: the excess over drift
            assert metric in logged, metric
    backtest = {m for m in logged if "backtest_" in m}
    if backtest:  # the trained store's test split may hold too few periods for a backtest
        for row in trading[1:]:
            prefix = "" if row[0] == "model" else row[0].strip("`")
            for stat in trading[0][1:]:
                assert f"test_{prefix}backtest_{stat.strip('`')}" in logged, (prefix, stat)
