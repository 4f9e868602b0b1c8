"""The architecture keys have one source: the models' constructors. A checkpoint's config.json is
what the constructor took (model.config), and the schemas Hydra validates ``<phase>.arch``
against (kronos_exp.schemas) hold exactly those keys, in that order, so neither can drift."""
from __future__ import annotations

import dataclasses

import pytest

from kronos_exp.model import Kronos, KronosTokenizer
from kronos_exp.model.checkpoint import constructor_keys
from kronos_exp.schemas import PredictorArch, TokenizerArch


@pytest.mark.parametrize("schema, model", [(TokenizerArch, KronosTokenizer), (PredictorArch, Kronos)])
def test_the_arch_schema_holds_the_constructor_keys(schema, model):
    assert [f.name for f in dataclasses.fields(schema)] == constructor_keys(model)


def test_a_model_config_is_what_its_constructor_took():
    tokenizer = TokenizerArch(d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, s1_bits=4, s2_bits=4)
    predictor = PredictorArch(s1_bits=4, s2_bits=4, n_layers=1, d_model=16, n_heads=2, ff_dim=32)
    for schema, model in ((tokenizer, KronosTokenizer), (predictor, Kronos)):
        arguments = dataclasses.asdict(schema)
        built = model(**arguments)
        assert built.config == arguments and list(built.config) == constructor_keys(model)
        assert model.from_config(built.config).config == arguments
