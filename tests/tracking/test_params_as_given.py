"""Run params show the numbers the command line gave as they were typed (issue 28, item 3): the
typed config holds ``tokenizer.lr=2`` as the float 2.0 and MLflow showed ``2.0``, so a run's params
did not read as its overrides or its Optuna trial's params (``predictor.lr: 5`` beside ``5.0``)."""
from __future__ import annotations

from kronos_exp.hydra_job import given_values
from kronos_exp.tracking.runs import as_given


def test_a_number_is_shown_as_given_and_anything_else_as_resolved():
    given = given_values(["tokenizer.lr=2", "predictor.lr=1e-3", "data.clip=5.0", "seed=${oc.env:SEED}",
                          "mlflow.experiment_name=7", "~eval"])
    params = {"tokenizer.lr": "2.0", "predictor.lr": "0.001", "data.clip": "5.0", "seed": "3",
              "mlflow.experiment_name": "7", "tokenizer.epochs": "2"}
    assert as_given(params, given) == {**params, "tokenizer.lr": "2", "predictor.lr": "1e-3"}


def test_the_job_run_and_phase_run_log_the_learning_rate_as_typed(pipeline):
    pipeline.run("phases=tokenizer", "tokenizer.epochs=1", "tokenizer.lr=2")
    runs = pipeline.runs()
    assert [r.data.params["tokenizer.lr"] for r in runs] == ["2", "2"]  # the job run and its tokenizer run
