"""The sweep's job table, on hand-built rows: a column per swept parameter, the shared overrides
once above, floats to 4 significant digits; and job run names unique across sweeps."""
from __future__ import annotations

import re

from kronos_exp.tracking.sweep import JobInfo, _format_table, split_overrides

SHARED = "data.max_train_windows=128 tokenizer.epochs=1"


def _row(job: int, overrides: str, objective: float | str, status: str = "FINISHED", **extra) -> dict:
    return {"job": job, "objective": objective, "duration_s": 12.3, "status": status, "overrides": overrides,
            "run_id": f"run{job}", **extra}


def _lines(rows) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in _format_table(rows).splitlines()]


def test_a_column_per_swept_parameter_and_the_shared_overrides_once_above():
    rows = [_row(2, f"{SHARED} predictor.lr=4e-05 data.lookback_window=64", 3.6354210312),
            _row(0, f"{SHARED} predictor.lr=1e-05 data.lookback_window=64", 3.678441),
            _row(1, f"{SHARED} predictor.lr=1e-05 data.lookback_window=128", 3.7301)]
    text = _format_table(rows)
    first, header, rule, *body = text.splitlines()
    assert first == f"every job: {SHARED}"
    assert re.split(r"\s{2,}", header) == ["job", "predictor.lr", "data.lookback_window", "objective", "duration_s",
                                           "status"]
    assert set(rule) == {"-", " "}
    assert [re.split(r"\s{2,}", line) for line in body] == [["2", "4e-05", "64", "3.635", "12.3", "FINISHED"],
                                                            ["0", "1e-05", "64", "3.678", "12.3", "FINISHED"],
                                                            ["1", "1e-05", "128", "3.73", "12.3", "FINISHED"]]
    assert text.count("tokenizer.epochs=1") == 1 and "overrides" not in text


def test_floats_print_to_four_significant_digits_and_a_short_row():
    # What Optuna suggests: full-precision floats, one row ~190 characters before.
    rows = [_row(0, f"{SHARED} tokenizer.lr=0.0012345678901234 predictor.lr=0.00049876543210987 predictor.epochs=2",
                 0.93941234567, eval_val_close_mae=1.2584123456, eval_test_close_mae=0.95108765),
            _row(1, f"{SHARED} tokenizer.lr=0.0040000000000001 predictor.lr=0.0021111111111111 predictor.epochs=3",
                 1.0123456789, eval_val_close_mae=1.3, eval_test_close_mae=1.0)]
    lines = _lines(rows)
    assert lines[1] == ["job", "tokenizer.lr", "predictor.lr", "predictor.epochs", "objective", "val_close_mae",
                        "test_close_mae", "duration_s", "status"]
    assert lines[3] == ["0", "0.001235", "0.0004988", "2", "0.9394", "1.258", "0.9511", "12.3", "FINISHED"]
    assert lines[4] == ["1", "0.004", "0.002111", "3", "1.012", "1.3", "1", "12.3", "FINISHED"]
    assert max(len(line) for line in _format_table(rows).splitlines()[1:]) < 120  # the header's names are the widest


def test_a_key_only_some_jobs_set_is_swept_and_unfinished_jobs_show_their_status():
    rows = [_row(0, "a=1 +b=x", 1.0), _row(1, "a=1", "", status="FAILED"), _row(2, "a=1 +b=y", "", status="PRUNED")]
    assert split_overrides(rows) == (["+b"], ["a=1"])
    lines = _lines(rows)
    assert lines[0] == ["every job: a=1"]
    assert lines[1] == ["job", "+b", "objective", "duration_s", "status"]
    # (empty cells vanish in the split on runs of spaces)
    assert lines[3:] == [["0", "x", "1", "12.3", "FINISHED"], ["1", "12.3", "FAILED"], ["2", "y", "12.3", "PRUNED"]]


def test_jobs_without_overrides_print_no_shared_line():
    lines = _lines([_row(0, "(defaults)", 0.5)])
    assert lines[0] == ["job", "objective", "duration_s", "status"] and lines[2] == ["0", "0.5", "12.3", "FINISHED"]


def test_job_run_names_are_unique_across_sweeps():
    names = {JobInfo(True, num, [], sweep).tags()["mlflow.runName"]
             for sweep in ("sweep-20261201-120000", "sweep-20261201-130000") for num in (0, 1)}
    assert names == {"sweep-20261201-120000-job-0", "sweep-20261201-120000-job-1",
                     "sweep-20261201-130000-job-0", "sweep-20261201-130000-job-1"}
    assert JobInfo(True, 3, [], "sweep-1").tags()["job_num"] == "3"
