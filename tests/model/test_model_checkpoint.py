"""Checkpoint I/O in the published layout: strict loading, exact round trips, atomic saving, hub ids."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import kronos_exp.model.checkpoint as checkpoint
from kronos_exp.model import CheckpointError, Kronos, KronosTokenizer

TIME_EMBEDS = ["minute", "hour", "weekday", "day", "month"]


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_weights(folder: Path, edit) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def predictor_outputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    bits1, bits2 = model.config["s1_bits"], model.config["s2_bits"]
    s1, s2 = torch.randint(0, 2 ** bits1, (2, 11), generator=g), torch.randint(0, 2 ** bits2, (2, 11), generator=g)
    target = torch.randint(0, 2 ** bits1, (2, 11), generator=g)
    stamp = torch.stack([torch.randint(0, h, (2, 11), generator=g) for h in (60, 24, 7, 32, 13)], -1).float()
    model.eval()
    with torch.no_grad():
        return model(s1, s2, stamp, use_teacher_forcing=True, s1_targets=target)


def tokenizer_outputs(tok, seed=0):
    x = torch.randn(2, 11, 6, generator=torch.Generator().manual_seed(seed))
    tok.eval()
    with torch.no_grad():
        (z_pre, z), loss, quantized, indices = tok(x)
        s1, s2 = tok.encode(x, half=True)
        return z_pre, z, loss, quantized, indices, s1, s2, tok.decode((s1, s2), half=True)


def assert_all_equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------- published layout


@pytest.mark.parametrize("cls, part", [(KronosTokenizer, "tokenizer"), (Kronos, "predictor")])
def test_saved_fixture_has_the_published_keys_and_config(cls, part, parity_dir, meta, tmp_path):
    loaded = cls.from_pretrained(parity_dir / part)
    out = loaded.save_pretrained(tmp_path / part)
    assert out == tmp_path / part
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    saved = load_file(str(out / "model.safetensors"))
    assert sorted(saved) == sorted(meta[f"{part}_keys"])
    published = load_file(str(parity_dir / part / "model.safetensors"))
    for key, tensor in published.items():
        assert saved[key].dtype == tensor.dtype and torch.equal(saved[key], tensor), key
    config = json.loads((out / "config.json").read_text())
    assert config == json.loads((parity_dir / part / "config.json").read_text())


def test_fresh_models_save_the_published_key_sets(make_tokenizer, make_predictor, parity_dir, meta, tmp_path):
    tok_config = json.loads((parity_dir / "tokenizer" / "config.json").read_text())
    pred_config = json.loads((parity_dir / "predictor" / "config.json").read_text())
    KronosTokenizer(**tok_config).save_pretrained(tmp_path / "tok")
    Kronos(**pred_config).save_pretrained(tmp_path / "pred")
    assert sorted(load_file(str(tmp_path / "tok" / "model.safetensors"))) == sorted(meta["tokenizer_keys"])
    assert sorted(load_file(str(tmp_path / "pred" / "model.safetensors"))) == sorted(meta["predictor_keys"])
    # config.json holds exactly the published constructor keys, whatever the sizes
    make_tokenizer(d_model=8).save_pretrained(tmp_path / "tok2")
    make_predictor(d_model=8).save_pretrained(tmp_path / "pred2")
    assert set(json.loads((tmp_path / "tok2" / "config.json").read_text())) == set(tok_config)
    assert set(json.loads((tmp_path / "pred2" / "config.json").read_text())) == set(pred_config)


def test_round_trip_reproduces_outputs_exactly(make_tokenizer, make_predictor, tmp_path):
    tok = make_tokenizer(seed=3)
    model = make_predictor(seed=4)
    tok2 = KronosTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "tok"))
    model2 = Kronos.from_pretrained(str(model.save_pretrained(tmp_path / "pred")))  # str paths too
    assert tok2.config == tok.config and model2.config == model.config
    assert_same_state(tok, tok2)
    assert_same_state(model, model2)
    assert_all_equal(tokenizer_outputs(tok), tokenizer_outputs(tok2))
    assert_all_equal(predictor_outputs(model), predictor_outputs(model2))
    # and the reload is not just another copy of the same random init
    other = make_predictor(seed=5)
    assert not torch.equal(predictor_outputs(other)[0], predictor_outputs(model2)[0])


def test_fixed_time_embedding_uses_the_published_keys_and_round_trips(make_predictor, tmp_path):
    model = make_predictor(learn_te=False)
    for name in TIME_EMBEDS:
        table = getattr(model.time_emb, f"{name}_embed").emb.weight
        assert not table.requires_grad
        # the fixed table is the sinusoidal one: row 0 is sin(0)=0, cos(0)=1 alternating
        assert torch.equal(table[0, 0::2], torch.zeros(8)) and torch.equal(table[0, 1::2], torch.ones(8))
    model.save_pretrained(tmp_path / "pred")
    keys = set(load_file(str(tmp_path / "pred" / "model.safetensors")))
    for name in TIME_EMBEDS:
        assert f"time_emb.{name}_embed.emb.weight" in keys
        assert f"time_emb.{name}_embed.weight" not in keys
    assert json.loads((tmp_path / "pred" / "config.json").read_text())["learn_te"] is False
    again = Kronos.from_pretrained(tmp_path / "pred")
    assert_same_state(model, again)
    assert_all_equal(predictor_outputs(model), predictor_outputs(again))


def test_learned_and_fixed_time_embeddings_do_not_load_into_each_other(make_predictor, tmp_path):
    make_predictor(learn_te=False).save_pretrained(tmp_path / "fixed")
    edit_config(tmp_path / "fixed", lambda c: c.update(learn_te=True))
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(tmp_path / "fixed")
    assert "time_emb.minute_embed.weight" in str(err.value)  # missing
    assert "time_emb.minute_embed.emb.weight" in str(err.value)  # unexpected


@pytest.mark.parametrize("bits, group_size", [(6, 4), (5, 5), (3, 2)])
def test_other_bit_widths_and_group_sizes_round_trip(bits, group_size, make_tokenizer, make_predictor, tmp_path):
    tok = make_tokenizer(s1_bits=bits, s2_bits=bits, group_size=group_size)
    model = make_predictor(s1_bits=bits, s2_bits=bits)
    tok2 = KronosTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "tok"))
    model2 = Kronos.from_pretrained(model.save_pretrained(tmp_path / "pred"))
    assert tok2.config["group_size"] == group_size and tok2.config["s1_bits"] == bits
    saved = load_file(str(tmp_path / "tok" / "model.safetensors"))
    assert saved["tokenizer.bsq.group_basis"].shape == (group_size,)
    assert saved["tokenizer.bsq.basis"].shape == (2 * bits,)
    assert load_file(str(tmp_path / "pred" / "model.safetensors"))["head.proj_s2.weight"].shape == (2 ** bits, 16)
    out, out2 = tokenizer_outputs(tok), tokenizer_outputs(tok2)
    assert_all_equal(out, out2)
    assert int(out[5].max()) < 2 ** bits and int(out[6].max()) < 2 ** bits
    assert_all_equal(predictor_outputs(model), predictor_outputs(model2))


# ---------------------------------------------------------------- strict loading


@pytest.fixture
def pred_dir(parity_dir, tmp_path) -> Path:
    return copy_checkpoint(parity_dir / "predictor", tmp_path / "pred")


@pytest.fixture
def tok_dir(parity_dir, tmp_path) -> Path:
    return copy_checkpoint(parity_dir / "tokenizer", tmp_path / "tok")


def test_missing_tensor_is_named(pred_dir):
    edit_weights(pred_dir, lambda s: (s.pop("dep_layer.norm.weight"), s.pop("head.proj_s2.bias")))
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(pred_dir)
    msg = str(err.value)
    assert "missing" in msg and "dep_layer.norm.weight" in msg and "head.proj_s2.bias" in msg
    assert "unexpected" not in msg


def test_unexpected_tensor_is_named(tok_dir):
    edit_weights(tok_dir, lambda s: s.update({"decoder.9.ffn.w1.weight": torch.zeros(2, 2)}))
    with pytest.raises(CheckpointError) as err:
        KronosTokenizer.from_pretrained(tok_dir)
    msg = str(err.value)
    assert "unexpected" in msg and "decoder.9.ffn.w1.weight" in msg
    assert "missing" not in msg


def test_shape_mismatch_is_named(pred_dir):
    edit_weights(pred_dir, lambda s: s.update({"head.proj_s1.bias": torch.zeros(17)}))
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(pred_dir)
    msg = str(err.value)
    assert "head.proj_s1.bias" in msg and "(17,)" in msg and "(16,)" in msg


def test_config_that_does_not_fit_the_weights_names_the_tensors(pred_dir):
    edit_config(pred_dir, lambda c: c.update(s1_bits=5))
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(pred_dir)
    msg = str(err.value)
    assert "embedding.emb_s1.weight" in msg and "head.proj_s1.weight" in msg


def test_unknown_config_key_is_named(tok_dir):
    edit_config(tok_dir, lambda c: c.update(n_mystery_layers=3))
    with pytest.raises(CheckpointError) as err:
        KronosTokenizer.from_pretrained(tok_dir)
    assert "n_mystery_layers" in str(err.value)


def test_missing_config_key_is_named(pred_dir):
    edit_config(pred_dir, lambda c: c.pop("token_dropout_p"))
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(pred_dir)
    assert "token_dropout_p" in str(err.value)


def test_tokenizer_checkpoint_does_not_load_as_predictor(parity_dir):
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(parity_dir / "tokenizer")
    assert "d_in" in str(err.value) and "n_layers" in str(err.value)


def test_invalid_config_json_is_an_error_naming_the_file(pred_dir):
    (pred_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        Kronos.from_pretrained(pred_dir)
    assert "config.json" in str(err.value)


@pytest.mark.parametrize("how", ["absolute", "relative", "nested", "hub_shaped"])
def test_path_that_does_not_exist_is_file_not_found(how, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    path = {"absolute": str(tmp_path / "no_such_checkpoint"), "relative": "./no_such_checkpoint",
            "nested": "runs/1/no_such_checkpoint", "hub_shaped": "runs/no_such_checkpoint"}[how]
    with pytest.raises(FileNotFoundError) as err:
        Kronos.from_pretrained(path)
    assert path in str(err.value)


def test_folder_without_weights_names_the_missing_file(pred_dir):
    (pred_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as err:
        Kronos.from_pretrained(pred_dir)
    assert "model.safetensors" in str(err.value) and str(pred_dir) in str(err.value)


def test_file_instead_of_folder_is_an_error(pred_dir):
    with pytest.raises(FileNotFoundError) as err:
        Kronos.from_pretrained(pred_dir / "config.json")
    assert "folder" in str(err.value)


# ---------------------------------------------------------------- hub ids


HUB_ID = "NeoQuasar/Kronos-small"


def assert_explains_local_folder(msg: str):
    assert HUB_ID in msg
    assert f"huggingface-cli download {HUB_ID}" in msg and "--local-dir" in msg
    assert "pass its path" in msg


def test_hub_id_without_huggingface_hub_says_how_to_get_the_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(FileNotFoundError) as err:
        Kronos.from_pretrained(HUB_ID)
    assert "huggingface_hub" in str(err.value)
    assert_explains_local_folder(str(err.value))


def test_hub_id_without_network_says_how_to_get_the_weights(monkeypatch):
    """The branch this machine takes with its real environment (no network, hub client maybe absent)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if importlib.util.find_spec("huggingface_hub") is not None:
        import huggingface_hub.constants
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        KronosTokenizer.from_pretrained("NeoQuasar/Kronos-Tokenizer-base")
    msg = str(err.value)
    assert "NeoQuasar/Kronos-Tokenizer-base" in msg and "--local-dir" in msg
    if importlib.util.find_spec("huggingface_hub") is None:
        assert "huggingface_hub" in msg
    else:
        assert "could not be fetched" in msg


def test_hub_download_failure_says_how_to_get_the_weights(monkeypatch):
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(repo_id)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    with pytest.raises(FileNotFoundError) as err:
        Kronos.from_pretrained(HUB_ID)
    assert calls == [HUB_ID]
    msg = str(err.value)
    assert "could not be fetched" in msg and "couldn't connect" in msg
    assert_explains_local_folder(msg)


def test_hub_download_result_is_loaded(monkeypatch, parity_dir):
    """A hub id resolves to the folder snapshot_download returns, loaded like a local one."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(
        snapshot_download=lambda repo_id, **kw: str(parity_dir / "predictor")))
    model = Kronos.from_pretrained(HUB_ID)
    assert_same_state(model, Kronos.from_pretrained(parity_dir / "predictor"))


# ---------------------------------------------------------------- atomic saving


def fail_midway(monkeypatch):
    """Make safetensors' save_file (as checkpoint.py uses it) write half a file and then fail."""
    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint, "save_file", broken_save_file)


def test_failed_save_leaves_no_folder(make_predictor, tmp_path, monkeypatch):
    fail_midway(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        make_predictor().save_pretrained(tmp_path / "ckpts" / "best")
    assert list((tmp_path / "ckpts").iterdir()) == []


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_failed_save_keeps_the_previous_checkpoint(make_predictor, tmp_path, monkeypatch):
    target = tmp_path / "ckpts" / "best"
    old = make_predictor(seed=1)
    old.save_pretrained(target)
    before = snapshot(target)
    fail_midway(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        make_predictor(seed=2, d_model=8).save_pretrained(target)
    assert list((tmp_path / "ckpts").iterdir()) == [target]
    assert snapshot(target) == before
    assert_same_state(Kronos.from_pretrained(target), old)


def test_failed_final_move_keeps_the_previous_checkpoint(make_predictor, tmp_path, monkeypatch):
    """A failure while swapping the new folder in must not lose the old one either."""
    target = tmp_path / "ckpts" / "best"
    make_predictor(seed=1).save_pretrained(target)
    before = snapshot(target)
    real_replace, failed = os.replace, []

    def replace(src, dst):
        if Path(dst) == target and not failed:
            failed.append(src)
            raise OSError("rename failed")
        return real_replace(src, dst)

    class OsProxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(os, name)

    proxy = OsProxy("os")
    proxy.replace = replace
    monkeypatch.setattr(checkpoint, "os", proxy)
    with pytest.raises(OSError, match="rename failed"):
        make_predictor(seed=2).save_pretrained(target)
    assert failed, "the new checkpoint was never moved into place"
    assert list((tmp_path / "ckpts").iterdir()) == [target]
    assert snapshot(target) == before


def test_overwriting_a_checkpoint_replaces_it_cleanly(make_predictor, tmp_path):
    target = tmp_path / "ckpts" / "best"
    make_predictor(seed=1).save_pretrained(target)
    (target / "stale.txt").write_text("from an older save")
    new = make_predictor(seed=2)
    new.save_pretrained(target)
    assert list((tmp_path / "ckpts").iterdir()) == [target]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_state(Kronos.from_pretrained(target), new)


def test_the_weights_are_as_readable_as_their_config(make_predictor, tmp_path):
    """safetensors writes its file 0600: a team sharing a checkpoint folder could read config.json but
    not the weights. Both get the mode any new file gets under the umask."""
    target = make_predictor().save_pretrained(tmp_path / "best")
    modes = {name: stat.S_IMODE((target / name).stat().st_mode) for name in ("config.json", "model.safetensors")}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~_umask(), modes


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
