"""Architecture presets in conf/tokenizer and conf/predictor build the published Kronos family.

The expected numbers are the published facts (parameter counts, dropouts, context lengths), written
out here on purpose. The big presets are built on the meta device: parameters are counted, never
allocated or run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kronos_exp.model import Kronos, KronosTokenizer

CONF = Path(__file__).resolve().parents[2] / "conf"


def load_preset(group: str, name: str):
    """The preset file with the files in its `defaults` merged under it (the `schema` entry is skipped)."""
    node = OmegaConf.load(CONF / group / f"{name}.yaml")
    merged = OmegaConf.create()
    for entry in node.get("defaults", []):
        if entry in ("_self_", "schema"):
            continue
        assert isinstance(entry, str), f"{group}/{name}: unexpected defaults entry {entry}"
        merged = OmegaConf.merge(merged, load_preset(group, entry))
    body = OmegaConf.masked_copy(node, [k for k in node if k != "defaults"])
    return OmegaConf.merge(merged, body)


def arch_of(group: str, name: str) -> dict:
    return OmegaConf.to_container(load_preset(group, name).arch, resolve=True)


def count_on_meta(cls, arch: dict) -> int:
    with torch.device("meta"):
        model = cls(**arch)
    n = sum(p.numel() for p in model.parameters())
    del model
    return n


PUBLISHED_TOKENIZERS = {"base": 3_958_042, "2k": 3_958_042}
PUBLISHED_PREDICTORS = {"mini": 4_108_032, "small": 24_741_376, "base": 102_310_592}
PUBLISHED_DROPOUTS = {  # ffn, attn, resid, token
    "mini": (0.2, 0.0, 0.2, 0.0),
    "small": (0.25, 0.1, 0.25, 0.1),
    "base": (0.2, 0.0, 0.2, 0.0),
}
PUBLISHED_CONTEXT = {"mini": 2048, "small": 512, "base": 512}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOKENIZERS))
def test_published_tokenizer_presets(name):
    arch = arch_of("tokenizer", name)
    assert count_on_meta(KronosTokenizer, arch) == PUBLISHED_TOKENIZERS[name]
    expected = dict(d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4,
                    ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=10, s2_bits=10,
                    beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size={"base": 4, "2k": 5}[name])
    assert arch == expected


@pytest.mark.parametrize("name", sorted(PUBLISHED_PREDICTORS))
def test_published_predictor_presets(name):
    preset = load_preset("predictor", name)
    arch = arch_of("predictor", name)
    with torch.device("meta"):
        model = Kronos(**arch)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PREDICTORS[name]
    assert preset.max_context == PUBLISHED_CONTEXT[name]
    assert arch["s1_bits"] == arch["s2_bits"] == 10 and arch["learn_te"] is True
    ffn, attn, resid, token = PUBLISHED_DROPOUTS[name]
    assert (arch["ffn_dropout_p"], arch["attn_dropout_p"], arch["resid_dropout_p"], arch["token_dropout_p"]) \
        == (ffn, attn, resid, token)
    # ... and the built model uses them where the published one does
    assert model.token_drop.p == token
    for block in model.transformer:
        assert block.ffn.dropout.p == ffn
        assert block.self_attn.attn_dropout_p == attn
        assert block.self_attn.resid_dropout.p == resid
    del model


def tiny_arch(group: str) -> dict:
    """The tiny preset completed by the schema's defaults, as Hydra composes it."""
    from kronos_exp.schemas import PredictorArch, TokenizerArch
    schema = OmegaConf.structured(TokenizerArch if group == "tokenizer" else PredictorArch)
    return OmegaConf.to_container(OmegaConf.merge(schema, load_preset(group, "tiny").arch), resolve=True)


def test_tiny_presets_have_matching_bit_widths():
    tok, pred = arch_of("tokenizer", "tiny"), arch_of("predictor", "tiny")
    assert (tok["s1_bits"], tok["s2_bits"]) == (pred["s1_bits"], pred["s2_bits"])
    assert (tok["s1_bits"] + tok["s2_bits"]) % tiny_arch("tokenizer")["group_size"] == 0


def test_tiny_tokenizer_and_predictor_train_a_step():
    tok_arch, pred_arch = tiny_arch("tokenizer"), tiny_arch("predictor")
    torch.manual_seed(0)
    tok, model = KronosTokenizer(**tok_arch), Kronos(**pred_arch)
    x = torch.randn(3, 24, tok_arch["d_in"])
    stamp = torch.stack([torch.randint(0, h, (3, 24)) for h in (60, 24, 7, 32, 13)], -1).float()

    tok.train()
    (z_pre, z), bsq_loss, _, _ = tok(x)
    tok_loss = (F.mse_loss(z_pre, x) + F.mse_loss(z, x)) / 2 + bsq_loss
    tok_loss.backward()
    assert torch.isfinite(tok_loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tok.parameters())
    assert tok.embed.weight.grad.abs().sum() > 0

    tok.eval()
    with torch.no_grad():
        s1, s2 = tok.encode(x, half=True)
    v1, v2 = 2 ** pred_arch["s1_bits"], 2 ** pred_arch["s2_bits"]
    assert int(s1.max()) < v1 and int(s2.max()) < v2
    model.train()
    s1_logits, s2_logits = model(s1[:, :-1], s2[:, :-1], stamp[:, :-1], use_teacher_forcing=True,
                                 s1_targets=s1[:, 1:])
    assert s1_logits.shape == (3, 23, v1) and s2_logits.shape == (3, 23, v2)
    loss = (F.cross_entropy(s1_logits.reshape(-1, v1), s1[:, 1:].reshape(-1))
            + F.cross_entropy(s2_logits.reshape(-1, v2), s2[:, 1:].reshape(-1))) / 2
    loss.backward()
    assert torch.isfinite(loss)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    assert model.dep_layer.cross_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.embedding.emb_s1.weight.grad.abs().sum() > 0
