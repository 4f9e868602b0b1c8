"""A run's ``last_state`` tag is only a claim: the state is resumed only from where a phase run
keeps it, and only holding the bytes its run recorded."""
from __future__ import annotations

import hashlib

from kronos_exp.tracking.resume import Unfinished, state_file, state_problem


def planted(tmp_path, name="tokenizer.last.safetensors", data=b"state bytes"):
    path = tmp_path / "run" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_the_file_its_run_recorded_is_resumed(tmp_path):
    path, digest = planted(tmp_path)
    assert path == state_file(tmp_path / "run", "tokenizer")
    assert state_problem(Unfinished("r", "KILLED", path, (digest,)), "tokenizer") is None
    assert state_problem(Unfinished("r", "KILLED", path, ("0" * 64, digest)), "tokenizer") is None  # killed pre-rename


def test_a_changed_truncated_or_unrecorded_file_is_refused(tmp_path):
    path, digest = planted(tmp_path)
    path.write_bytes(b"state bytez")  # one bit flipped
    assert "is not the file its run saved" in state_problem(Unfinished("r", "KILLED", path, (digest,)), "tokenizer")
    path.write_bytes(b"state")
    assert "truncated, altered or replaced" in state_problem(Unfinished("r", "KILLED", path, (digest,)), "tokenizer")
    assert "recorded no sha256" in state_problem(Unfinished("r", "KILLED", path, ()), "tokenizer")


def test_a_tag_pointing_elsewhere_is_refused_even_with_the_right_digest(tmp_path):
    for name in ("evil.pt", "predictor.last.safetensors"):  # another name; another phase's state
        path, digest = planted(tmp_path, name)
        problem = state_problem(Unfinished("r", "KILLED", path, (digest,)), "tokenizer")
        assert problem == (f"its last_state tag points at {path}, not at a run folder's "
                           "checkpoints/tokenizer.last.safetensors")
    elsewhere = tmp_path / "evil.last.safetensors"
    elsewhere.write_bytes(b"x")
    assert "points at" in state_problem(Unfinished("r", "KILLED", elsewhere, ("",)), "tokenizer")
    link, digest = planted(tmp_path)
    target = tmp_path / "target"
    link.rename(target)
    link.symlink_to(target)
    assert "points at" in state_problem(Unfinished("r", "KILLED", link, (digest,)), "tokenizer")
