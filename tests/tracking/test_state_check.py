"""A run's tags on a shared server are anyone's word: a state and the best checkpoint beside it
are resumed only from where a phase run keeps them, as regular files of this user's, carrying
this user's signature (tracking/signatures.py) over their run, fingerprint, phase, path and bytes."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from kronos_exp.model.checkpoint import CheckpointError
from kronos_exp.tracking.resume import (NotResumable, Unfinished, best_fields, copy_best, resumable, state_fields,
                                        state_file)
from kronos_exp.tracking.signatures import key_path, sign


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def planted(tmp_path, name="tokenizer.last.safetensors", data=b"state bytes"):
    path = tmp_path / "run" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def signed_state(path, digest, run="r", fp="fp"):
    return sign(*state_fields(run, fp, "tokenizer", path, digest))


def unfinished(path, state_macs=(), best_macs=(), run="r"):
    return Unfinished(run, "KILLED", path, "fp", tuple(state_macs), tuple(best_macs))


def best_folder(tmp_path, weights=b"weights"):
    folder = tmp_path / "run" / "checkpoints" / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder, {"config.json": hashlib.sha256(b"{}").hexdigest(),
                    "model.safetensors": hashlib.sha256(weights).hexdigest()}


def test_a_state_this_user_signed_is_resumed_with_its_signed_best(tmp_path):
    path, digest = planted(tmp_path)
    assert path == state_file(tmp_path / "run", "tokenizer")
    assert resumable(unfinished(path, [signed_state(path, digest)]), "tokenizer") == {}  # no best yet
    assert resumable(unfinished(path, ["0" * 64, signed_state(path, digest)]), "tokenizer") == {}  # killed pre-rename
    folder, digests = best_folder(tmp_path)
    best = sign(*best_fields("r", "fp", "tokenizer", digests))
    assert resumable(unfinished(path, [signed_state(path, digest)], [best]), "tokenizer") == digests


def refusal(old, phase="tokenizer") -> str:
    with pytest.raises(NotResumable) as err:
        resumable(old, phase)
    return str(err.value)


def test_a_plain_digest_another_key_or_another_run_is_refused(tmp_path, monkeypatch):
    """What a planter on the server can record: the file's sha256, or a signature of its own."""
    path, digest = planted(tmp_path)
    assert "is not a training state this user's runs signed" in refusal(unfinished(path, [digest]))
    assert "not a training state" in refusal(unfinished(path, []))
    assert "not a training state" in refusal(unfinished(path, [signed_state(path, digest, run="other")], run="r"))
    assert "not a training state" in refusal(unfinished(path, [signed_state(path, digest, fp="another")]))
    mine = signed_state(path, digest)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "attacker"))
    theirs = signed_state(path, digest)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert "not a training state" in refusal(unfinished(path, [theirs]))  # signed with the attacker's key
    path.write_bytes(b"state bytez")  # altered since it was signed
    assert "not a training state" in refusal(unfinished(path, [mine]))


def test_a_tag_pointing_elsewhere_or_through_a_link_is_refused(tmp_path):
    for name in ("evil.pt", "predictor.last.safetensors"):  # another name; another phase's state
        path, digest = planted(tmp_path, name)
        assert refusal(unfinished(path, [signed_state(path, digest)])) == (
            f"its last_state tag points at {path}, not at a run folder's checkpoints/tokenizer.last.safetensors")
    link, digest = planted(tmp_path)
    target = tmp_path / "target"
    link.rename(target)
    link.symlink_to(target)
    assert "points at" in refusal(unfinished(link, [signed_state(link, digest)]))


def test_a_fifo_as_the_state_is_refused_without_a_hang(tmp_path):
    path = state_file(tmp_path / "run", "tokenizer")
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(refusal(unfinished(path, ["x"]))), daemon=True)
    thread.start()
    thread.join(10)
    assert outcome and "is not a regular file" in outcome[0]


def test_a_best_checkpoint_with_a_link_or_unsigned_is_refused(tmp_path):
    path, digest = planted(tmp_path)
    state = [signed_state(path, digest)]
    folder, digests = best_folder(tmp_path)
    assert "best checkpoint" in refusal(unfinished(path, state, []))  # no signature of it
    secret = tmp_path / "victims_secret"
    secret.write_bytes(b"weights")  # the very bytes that were signed, through a link
    best = sign(*best_fields("r", "fp", "tokenizer", digests))
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(secret)
    assert "cannot be opened as a file" in refusal(unfinished(path, state, [best]))


def test_a_key_others_can_read_signs_nothing(tmp_path):
    path, digest = planted(tmp_path)
    mac = signed_state(path, digest)
    key_path().chmod(0o644)
    assert "a key only you can read" in refusal(unfinished(path, [mac]))
    assert "chmod 600" in refusal(unfinished(path, [mac]))


def test_copying_the_best_takes_only_its_checked_files_and_refuses_a_change(tmp_path):
    path, digest = planted(tmp_path)
    folder, digests = best_folder(tmp_path)
    (folder / "MLmodel").write_text("planted")
    old = unfinished(path)
    target = tmp_path / "mine" / "checkpoints" / "tokenizer"
    copy_best(old, digests, target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    copy_best(old, digests, folder)  # a requeued job: its own folder, rebuilt from the checked files
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    (folder / "model.safetensors").write_bytes(b"swapped after the check")
    with pytest.raises(CheckpointError, match="changed while it was copied"):
        copy_best(old, digests, target)
    assert (target / "model.safetensors").read_bytes() == b"weights"
