"""`best` per data set: validation scores of different data never compare, so an evaluation moves
the alias of its own data (``best-<data key>``), and ``best`` itself only while it stands for that
data (the first data set ranked). Evaluating a second data set leaves the first one's ``best``
where it was, and the forecast command lists and uses each data set's alias."""
from __future__ import annotations

import re

import pandas as pd

from harness import forecast_command
from kronos_exp.data import sample_path
from kronos_exp.tracking.registry import RegisteredCheckpoint, Registry, data_alias, holder_tag

NAME = "kronos-predictor"


def _aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def _own_alias(client, version: str) -> str:
    """The per-data alias (``best-<12 hex digits>``) that points at ``version``."""
    (alias,) = [a for a, v in _aliases(client).items() if re.fullmatch(r"best-[0-9a-f]{12}", a) and v == version]
    return alias


def _hourly(folder) -> str:
    """The bundled sample's series re-dated: hourly bars from June 2021, a data set of its own."""
    prices = pd.read_csv(sample_path())
    prices = prices.groupby("symbol").tail(2000).copy()
    prices["timestamps"] = prices.groupby("symbol").cumcount().map(
        lambda k: pd.Timestamp("2021-06-01") + pd.Timedelta(hours=int(k)))
    path = folder / "hourly.csv"
    prices.to_csv(path, index=False)
    return str(path)


def test_evaluating_a_second_data_set_leaves_the_first_data_sets_best(trained, tmp_path):
    client = trained.client()
    assert _aliases(client)["best"] == "1"
    hourly = _hourly(tmp_path)

    done = trained.run("phases=all", *trained.SETTINGS, f"data.path={hourly}", fast=False)  # registers v2

    assert _aliases(client)["best"] == "1"  # the sample's best, where it was
    sample_alias, hourly_alias = _own_alias(client, "1"), _own_alias(client, "2")
    assert f"{NAME}@{hourly_alias} -> v2" in done.stdout

    listed = forecast_command(tmp_path, "best", f"tracking_uri={trained.tracking_uri}")
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.splitlines()
    (sample_line,) = [line for line in lines if f"models:/{NAME}@{sample_alias} " in line]
    (hourly_line,) = [line for line in lines if f"models:/{NAME}@{hourly_alias} " in line]
    assert " v1 (also @best) " in sample_line and "sample_5min.csv" in sample_line
    assert " v2 " in hourly_line and "also" not in hourly_line and "hourly.csv: 3 series 2021-06-01" in hourly_line

    forecast = forecast_command(tmp_path, f"model=models:/{NAME}@{hourly_alias}", f"data.path={hourly}",
                                "data.symbol_column=symbol", "pred_len=2", "sample_count=2", "out=hourly_forecast.csv",
                                f"tracking_uri={trained.tracking_uri}")
    assert forecast.returncode == 0, forecast.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "hourly_forecast.csv")) == 3 * 2  # 3 series x 2 steps


def test_best_moves_only_with_the_data_it_stands_for(trained):
    """Registry.rank on the trained store: another data set gets its own alias; a ``best`` set before
    aliases recorded their data stands for the data its version was ranked on; a deleted ``best``
    is taken by the next data set ranked."""
    client = trained.client()
    registry = Registry(client)
    sample_alias = _own_alias(client, "1")
    sample = sample_alias[len("best-"):]
    v1 = client.get_model_version(NAME, "1")
    (sample_key,) = [k for k in v1.tags if k.startswith("eval_val_close_mae.")]
    again = client.create_model_version(NAME, source=v1.source, run_id=v1.run_id)  # v1's files as v2
    v2 = RegisteredCheckpoint(NAME, str(again.version), "", again.run_id, again.source, {})

    def rank(data: str, key: str, score: float):
        return registry.rank(v2, key, score, "best", badness=lambda s: s, data=data, description=f"{data}.csv")

    other, third = "0123456789ab", "ba9876543210"
    rank(other, f"eval_val_close_mae.{other}", 1e-9)  # far better, but on other data
    assert _aliases(client) == {"best": "1", sample_alias: "1", data_alias("best", other): "2"}
    assert client.get_registered_model(NAME).tags[f"data.{other}"] == f"{other}.csv"

    client.delete_registered_model_tag(NAME, holder_tag("best"))  # as a store from before kept it
    rank(third, f"eval_val_close_mae.{third}", 1e-9)
    assert _aliases(client)["best"] == "1"  # v1 was ranked on the sample, not on this data
    rank(sample, sample_key, float(v1.tags[sample_key]) / 2)  # better on the sample itself
    assert _aliases(client)["best"] == _aliases(client)[sample_alias] == "2"
    assert client.get_registered_model(NAME).tags[holder_tag("best")] == sample

    client.delete_registered_model_alias(NAME, "best")
    rank(other, f"eval_val_close_mae.{other}", 1e-9)
    assert _aliases(client)["best"] == "2"
    assert client.get_registered_model(NAME).tags[holder_tag("best")] == other

