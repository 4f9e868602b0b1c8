"""The test split reports and never chooses: a 2-job `phases=all` sweep on a CSV whose test rows were
changed gives every job the same objective, the sweep table the same order and the `best` alias the
same version as on the original CSV, while the test report does change."""
from __future__ import annotations

import pandas as pd
import pytest
from harness import Cli

from kronos_exp.data import sample_path
from kronos_exp.data.windows import split_sizes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SWEEP = ["-m", "phases=all", "predictor.lr=1e-4,3e-3", "data.max_train_windows=64", "data.max_eval_windows=24",
         "tokenizer.epochs=1", "predictor.epochs=1", "eval.windows=6", "eval.sample_count=2", "eval.pred_len=4"]


def _with_test_rows_changed(path) -> None:
    """The bundled sample with each series' test rows moved: prices x1.37, volumes x2 (still valid bars)."""
    df = pd.read_csv(sample_path())
    for _, rows in df.groupby("symbol").groups.items():
        n_train, n_val, _ = split_sizes(len(rows), 0.8, 0.1)
        test = rows[n_train + n_val:]
        df.loc[test, ["open", "high", "low", "close"]] *= 1.37
        df.loc[test, ["volume", "amount"]] *= 2
    df.to_csv(path, index=False)


def _sweep(root, csv) -> dict:
    cli = Cli(root)
    proc = cli.run(*SWEEP, f"data.path={csv}", fast=False, timeout=600)
    out = proc.stdout + proc.stderr
    lines = out[out.index("best first"):].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("job  "))
    order = [int(line.split()[0]) for line in lines[header + 2:header + 4]]
    jobs = {int(r.data.tags["job_num"]): r.data.metrics for r in cli.runs()
            if r.data.tags.get("job_num") is not None and "phase" not in r.data.tags}
    best = cli.client().get_model_version_by_alias("kronos-predictor", "best").version
    return {"order": order, "objective": {j: m["objective"] for j, m in jobs.items()},
            "test": {j: m["eval_test_close_mae"] for j, m in jobs.items()}, "best": best}


def test_changing_test_rows_changes_the_report_and_no_choice(tmp_path):
    original, changed = tmp_path / "original", tmp_path / "changed"
    original.mkdir()
    changed.mkdir()
    pd.read_csv(sample_path()).to_csv(original / "prices.csv", index=False)
    _with_test_rows_changed(changed / "prices.csv")
    before, after = _sweep(original, "prices.csv"), _sweep(changed, "prices.csv")
    assert before["objective"][0] != pytest.approx(before["objective"][1])  # the jobs differ: an order to keep
    assert after["objective"] == before["objective"]  # exactly: the validation split alone decides
    assert after["order"] == before["order"]
    assert after["best"] == before["best"]
    for job in (0, 1):  # the test report did see the new rows
        assert after["test"][job] != pytest.approx(before["test"][job], rel=1e-3)
