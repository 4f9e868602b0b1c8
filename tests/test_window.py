"""WindowSpec: what a model was trained to see, saved beside its checkpoint and read back strictly."""
from __future__ import annotations

import json
import stat

import pytest

from kronos_exp.errors import UserError
from kronos_exp.window import WindowSpec, WindowSpecError


def test_round_trip_through_window_json(tmp_path):
    spec = WindowSpec(lookback=90, horizon=10, clip=3.5, max_context=256)
    path = spec.save(tmp_path)
    assert path == tmp_path / "window.json" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {"lookback": 90, "horizon": 10, "clip": 3.5, "max_context": 256}
    assert WindowSpec.load(tmp_path) == spec
    assert WindowSpec.from_mapping(spec.to_dict(), "x") == spec
    assert [p.name for p in tmp_path.iterdir()] == ["window.json"]  # no temporary file left


def test_a_folder_without_window_json_gets_the_published_defaults(tmp_path):
    spec = WindowSpec.load(tmp_path)
    assert spec == WindowSpec(lookback=None, horizon=None, clip=5.0, max_context=512)


def test_an_integer_clip_is_read_as_a_float():
    assert WindowSpec.from_mapping({"clip": 3}, "x").clip == 3.0


@pytest.mark.parametrize("content, message", [
    ({"lookback": 90, "stride": 2}, "unknown window key(s) ['stride']; valid: lookback, horizon, clip, max_context"),
    ({"clip": True}, "clip=true; valid: a finite number > 0"),
    ({"clip": "nan"}, 'clip="nan"; valid: a finite number > 0'),
    ({"clip": float("nan")}, "clip=NaN; valid: a finite number > 0"),
    ({"clip": -1}, "clip=-1; valid: a finite number > 0"),
    ({"clip": 0}, "clip=0; valid: a finite number > 0"),
    ({"lookback": -1}, "lookback=-1; valid: an integer >= 1 or null"),
    ({"horizon": 2.5}, "horizon=2.5; valid: an integer >= 1 or null"),
    ({"lookback": True}, "lookback=true; valid: an integer >= 1 or null"),
    ({"max_context": None}, "max_context=null; valid: an integer >= 1"),
    ({"max_context": 0}, "max_context=0; valid: an integer >= 1"),
    ([1, 2], "the window must be a JSON object with keys lookback, horizon, clip, max_context, not list"),
])
def test_a_hostile_window_json_is_one_line_naming_the_file_and_key(tmp_path, content, message):
    (tmp_path / "window.json").write_text(json.dumps(content))
    with pytest.raises(WindowSpecError) as err:
        WindowSpec.load(tmp_path)
    text = str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert "\n" not in text and text.startswith(f"{tmp_path / 'window.json'}: ") and message in text, text


def test_a_window_json_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / "window.json").write_text("{lookback: 3")
    with pytest.raises(WindowSpecError, match=r"window\.json: not valid JSON") as err:
        WindowSpec.load(tmp_path)
    assert "\n" not in str(err.value)
