"""docs/reference/config.md, the configuration reference, is what docs/gen_config_reference.py makes
from the code now, and lists every setting of the composed config with its default under each data
preset and the comment its schema field carries."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness import compose

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reference" / "config.md"
PRESETS = ("sample", "csv")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "docs" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each ``## section``'s table rows as {column header: cell}, in page order."""
    out: dict[str, list[dict[str, str]]] = {}
    section, header = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:], None
        elif line.startswith("|") and section:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
            elif not set(line) <= set("|- "):
                out.setdefault(section, []).append(dict(zip(header, cells)))
        elif not line.strip():
            header = None if section and out.get(section) else header
    return out


def test_the_page_is_what_the_generator_makes_from_the_code_now():
    assert PAGE.read_text() == gen.render(), "stale: run python docs/gen_config_reference.py"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_setting_is_listed_with_its_default_under_each_data_preset(preset):
    tables = _tables(PAGE.read_text())
    rows = {row["setting"].strip("`"): (section, row) for section, found in tables.items()
            if section != "Architecture presets" for row in found if "setting" in row}
    config = OmegaConf.to_container(compose(f"data={preset}", hydra_config=False), resolve=False)
    settings = dict(_leaves(config))
    assert len(settings) > 100  # the whole config, not a part of it
    for key, value in settings.items():
        assert key in rows, f"{key} is not in the reference"
        section, row = rows[key]
        cell = row.get(f"`data={preset}`", row.get("default"))
        assert cell is not None, (key, row)
        shown = gen.fmt(value).replace("|", "\\|")
        assert cell.startswith(f"`{shown}`"), (key, preset, cell, shown)


def test_the_data_presets_defaults_are_told_apart():
    rows = {row["setting"]: row for row in _tables(PAGE.read_text())["data"]}
    assert (rows["`data.stride`"]["`data=sample`"], rows["`data.stride`"]["`data=csv`"]) == ("`2`", "`1`")
    assert rows["`data.max_train_windows`"]["`data=csv`"] == "`null`"
    assert rows["`data.path`"]["`data=csv`"] == "`???` (required)"


def test_each_setting_means_what_its_schema_comment_says():
    rows = {row["setting"]: row for found in _tables(PAGE.read_text()).values() for row in found if "setting" in row}
    assert rows["`data.stride`"]["meaning"] == "Step between consecutive window starts."
    assert rows["`eval.windows`"]["meaning"].startswith("forecast origins per split")
    assert rows["`predictor.max_context`"]["meaning"].startswith("longest token history")  # PredictorConfig's own
    assert rows["`tokenizer.grad_clip`"]["meaning"].startswith("max gradient norm")  # TrainConfig's, inherited
    assert rows["`serving.queue_s`"]["meaning"] == rows["`serving.max_concurrent`"]["meaning"]  # one sentence over two
    assert rows["`predictor.optimizer.lr`"]["default"] == "`${..lr}`: `predictor.lr`"
