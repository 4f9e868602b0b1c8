from pathlib import Path

import pytest

from kronos_exp.data import DataConfig, DataError, schema_node, validate_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def test_defaults_match_the_documented_schema():
    c = validate_config(DataConfig())
    assert (c.path, c.paths, c.symbol_column, c.timestamp_column, c.column_map) == (None, [], None, None, {})
    assert (c.nan_policy, c.lookback_window, c.predict_window, c.stride, c.clip) == ("ffill", 64, 16, 1, 5.0)
    assert (c.train_ratio, c.val_ratio, c.test_ratio) == (0.8, 0.1, 0.1)
    assert (c.max_train_windows, c.max_eval_windows) == (None, None)


def test_ratios_must_sum_to_one():
    with pytest.raises(DataError) as e:
        validate_config(DataConfig(train_ratio=0.7, val_ratio=0.2, test_ratio=0.2))
    assert "train_ratio=0.7, val_ratio=0.2, test_ratio=0.2" in str(e.value)
    assert "sum to 1" in str(e.value) and "sum 1.1" in str(e.value)
    validate_config(DataConfig(train_ratio=0.7, val_ratio=0.2, test_ratio=0.1))  # 0.7+0.2+0.1 != 1.0 exactly


def test_train_or_val_ratio_zero_is_refused_test_ratio_zero_is_not():
    with pytest.raises(DataError, match=r"val_ratio must be > 0 and test_ratio >= 0.*val_ratio=0\.0"):
        validate_config(DataConfig(train_ratio=0.9, val_ratio=0.0, test_ratio=0.1))
    validate_config(DataConfig(train_ratio=0.8, val_ratio=0.2, test_ratio=0.0))  # the reference configs' split


def test_unknown_nan_policy_names_the_valid_ones():
    with pytest.raises(DataError, match=r"data.nan_policy='zero' is not valid; use one of ffill, drop, error"):
        validate_config(DataConfig(nan_policy="zero"))


@pytest.mark.parametrize("field", ["lookback_window", "predict_window", "stride"])
def test_window_sizes_must_be_positive(field):
    with pytest.raises(DataError, match=rf"data.{field}=0 is not valid"):
        validate_config(DataConfig(**{field: 0}))


def test_accepts_dicts_and_rejects_unknown_fields():
    assert validate_config({"path": "a.csv", "stride": 3}).stride == 3
    with pytest.raises(DataError, match=r"unknown data config field\(s\) \['lookback'\]"):
        validate_config({"lookback": 3})


def _yaml(name):
    OmegaConf = pytest.importorskip("omegaconf").OmegaConf
    node = OmegaConf.load(CONF / f"{name}.yaml")
    assert list(node.pop("defaults")) == ["schema", "_self_"]
    return node


def test_yaml_files_merge_into_the_schema():
    OmegaConf = pytest.importorskip("omegaconf").OmegaConf
    schema = OmegaConf.structured(schema_node())
    sample = OmegaConf.merge(schema, _yaml("sample"))
    plain = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731 (what validate_config takes)
    c = validate_config(plain(sample))
    assert c.path is None and c.symbol_column == "symbol"
    assert (c.lookback_window, c.predict_window, c.max_train_windows, c.max_eval_windows) == (64, 16, 2048, 512)
    assert isinstance(OmegaConf.to_object(sample), DataConfig)

    csv = OmegaConf.merge(schema, _yaml("csv"))
    assert OmegaConf.is_missing(csv, "path")  # Hydra reports "Missing mandatory value: data.path"
    with pytest.raises(DataError, match=r"data.path is required"):
        validate_config(plain(csv))
    given = OmegaConf.merge(csv, OmegaConf.from_dotlist(["path=prices.csv", "stride=4"]))
    assert validate_config(plain(given)).path == "prices.csv" and validate_config(plain(given)).stride == 4
    listed = OmegaConf.merge(csv, OmegaConf.from_dotlist(["paths=[a.csv,b.csv]"]))
    assert validate_config(plain(listed)).paths == ["a.csv", "b.csv"]


def test_hydra_composes_the_data_group(tmp_path):
    """The two yaml files as a Hydra group whose `schema` is schema_node() (a private group name,
    so the project's own ConfigStore entries are left alone)."""
    pytest.importorskip("hydra")
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    group = "data_group_test"
    (tmp_path / group).mkdir()
    for name in ("sample", "csv"):
        (tmp_path / group / f"{name}.yaml").write_text((CONF / f"{name}.yaml").read_text())
    (tmp_path / "config.yaml").write_text(f"defaults:\n  - {group}: sample\n  - _self_\n")
    ConfigStore.instance().store(group=group, name="schema", node=schema_node())
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        sample = compose("config")[group]
        assert validate_config(OmegaConf.to_object(sample)).symbol_column == "symbol" and sample.path is None
        csv = compose("config", overrides=[f"{group}=csv"])[group]
        with pytest.raises(MissingMandatoryValue):
            csv.path
        given = compose("config", overrides=[f"{group}=csv", f"{group}.path=x/*.csv", f"{group}.lookback_window=32"])
        c = validate_config(OmegaConf.to_object(given[group]))
        assert (c.path, c.lookback_window, c.symbol_column) == ("x/*.csv", 32, None)
        with pytest.raises(Exception, match="stride"):
            compose("config", overrides=[f"{group}.stride=abc"])
    assert OmegaConf.is_missing(OmegaConf.structured(schema_node()), "path")


def test_schema_rejects_wrong_types_at_merge_time():
    omegaconf = pytest.importorskip("omegaconf")
    schema = omegaconf.OmegaConf.structured(DataConfig)
    with pytest.raises(omegaconf.errors.ValidationError):
        omegaconf.OmegaConf.merge(schema, {"stride": "abc"})


def test_repair_and_dayfirst_settings():
    assert (validate_config(DataConfig()).repair, validate_config(DataConfig()).dayfirst) == ("none", None)
    assert validate_config(DataConfig(repair="clip", dayfirst=True)).repair == "clip"
    with pytest.raises(DataError, match=r"data.repair='swap' is not valid; use one of none, clip"):
        validate_config(DataConfig(repair="swap"))
    with pytest.raises(DataError) as e:
        validate_config(DataConfig(dayfirst=True, timestamp_format="%d/%m/%Y"))
    assert str(e.value) == (
        "data.dayfirst=true and data.timestamp_format='%d/%m/%Y' are both set; the format already fixes the "
        "date order: set only one"
    )


def test_yaml_files_carry_the_new_settings():
    for name in ("csv", "sample"):
        node = _yaml(name)
        assert node.repair == "none" and node.dayfirst is None
