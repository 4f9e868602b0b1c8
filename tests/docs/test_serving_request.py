"""docs/serving.md's request from a CSV: the snippet (``ci:request``) writes request.json from
prices.csv, and that body, parsed as MLflow's scoring server parses a POST to /invocations, is
answered by the registered predictor (on a copy of the session's trained store)."""
from __future__ import annotations

import json

import mlflow
import pandas as pd
from mlflow.pyfunc.scoring_server import _split_data_and_params, infer_and_parse_data

from harness import page, snippet
from kronos_exp.data import sample_path


def test_the_snippet_turns_a_csv_into_a_request_the_served_model_answers(trained, tmp_path, monkeypatch):
    bars = pd.read_csv(sample_path())
    bars[bars["symbol"] == "ACME"].drop(columns="symbol").to_csv(tmp_path / "prices.csv", index=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet("request"), "docs/serving.md:request", "exec"), {})

    body = (tmp_path / "request.json").read_text()
    request = json.loads(body)
    split = request["dataframe_split"]
    # The layout the page describes: the file's columns, its rows as lists, the params beside them.
    shown = json.loads(page("serving").split('"dataframe_split": {"columns": ', 1)[1].split(', "data"', 1)[0])
    assert split["columns"] == shown and len(split["data"]) == 64
    assert split["data"][0][0] == str(bars[bars["symbol"] == "ACME"]["timestamps"].iloc[-64])
    assert request["params"] == {"pred_len": 3, "seed": 0}

    mlflow.set_tracking_uri(trained.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/kronos-predictor/1")
    data, params = _split_data_and_params(body)
    forecast = model.predict(infer_and_parse_data(data, model.metadata.get_input_schema()), params=params)
    assert len(forecast) == 3 and list(forecast.columns) == shown
    assert forecast.drop(columns="timestamps").notna().all().all()
