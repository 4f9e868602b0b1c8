"""Overrides as the manual (README.md, docs/) and the error messages show them."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from kronos_exp.__main__ import CONFIG_DIR
from kronos_exp.config import resolve, unknown_keys
from kronos_exp.data import load_series
from kronos_exp.errors import ConfigError


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("config", overrides=list(overrides))


def test_column_map_override_works_without_plus(tmp_path):
    csv = tmp_path / "bbg.csv"
    csv.write_text("date,open,high,low,Px_Last\n2024-01-02,1,2,0.5,1.5\n2024-01-03,1.5,2.5,1,2\n")
    cfg = _compose("data=csv", f"data.path={csv}", "data.column_map={Px_Last: close}", "data.column_map.foo=bar")
    assert dict(cfg.data.column_map) == {"Px_Last": "close", "foo": "bar"}
    cfg.data.column_map.pop("foo")
    [series] = load_series(cfg.data)
    assert series.values[:, 3].tolist() == [1.5, 2.0]
    assert unknown_keys(cfg) == []  # map entries are data, not schema keys


@pytest.mark.parametrize("override, key", [
    ("+predictor.lrr=1", "predictor.lrr"),
    ("+tokenizer.arch.dmodel=8", "tokenizer.arch.dmodel"),
    ("+data.lookback=8", "data.lookback"),
    ("+sed=1", "sed"),
])
def test_keys_added_with_plus_that_the_schema_lacks_are_errors(override, key):
    cfg = _compose(override)  # Hydra lets `+` add them...
    with pytest.raises(ConfigError, match=f"unknown key {key};"):
        resolve(cfg)  # ...the run refuses them before any work
    assert unknown_keys(_compose()) == []
