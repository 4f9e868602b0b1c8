"""KV-cached generation gives exactly the tokens of recomputing the window at every step.

The parity fixture's max_context is 32; histories of 20, 28 and 40 steps cover a window that
never slides, one that slides after a few cached steps, and one that slides from the start.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from kronos_exp.model.blocks import KVCache
from kronos_exp.forecasting.generation import GenerationStopped, generate, generate_tokens

GREEDY = dict(T=1.0, top_k=1, top_p=1.0)
NUCLEUS = dict(T=1.0, top_k=0, top_p=0.9)


def run(model, s1, s2, stamps, pred_len, max_context, use_cache, seed=0, **sampling):
    torch.manual_seed(seed)
    return generate_tokens(model, s1, s2, stamps, pred_len, max_context, use_cache=use_cache, **sampling)


def assert_same_tokens(got, want):
    for name, a, b in zip(("s1", "s2"), got, want):
        assert a.shape == b.shape
        assert torch.equal(a, b), f"{int((a != b).sum())} {name} tokens differ"


@pytest.fixture
def history(tok, cases, random_stamp):
    """history(steps, pred_len) -> s1, s2 [3, steps] of the fixture's three series, stamps [3, steps + pred_len, 5]."""
    def make(steps: int, pred_len: int):
        with torch.no_grad():
            s1, s2 = tok.eval().encode(cases["x"][:, :steps], half=True)
        return s1, s2, random_stamp(3, steps + pred_len, seed=steps)
    return make


@pytest.mark.parametrize("steps, pred_len", [(20, 12), (28, 10), (40, 6)])
def test_greedy_tokens_with_and_without_cache_are_identical_on_the_parity_fixture(model, meta, history, steps,
                                                                                    pred_len):
    model.eval()
    s1, s2, stamps = history(steps, pred_len)
    cached = run(model, s1, s2, stamps, pred_len, meta["max_context"], use_cache=True, **GREEDY)
    recomputed = run(model, s1, s2, stamps, pred_len, meta["max_context"], use_cache=False, **GREEDY)
    assert_same_tokens(cached, recomputed)
    assert torch.equal(cached[0][:, :steps], s1) and cached[0].shape == (3, steps + pred_len)
    assert len(set(map(tuple, cached[0][:, steps:].tolist()))) > 1  # the series get different forecasts


def test_greedy_tokens_are_identical_on_a_random_model_whose_window_slides(make_predictor, random_stamp):
    model = make_predictor(seed=3, s1_bits=6, s2_bits=5, n_layers=3, d_model=32, n_heads=4, ff_dim=48).eval()
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randint(0, 64, (4, 12), generator=g), torch.randint(0, 32, (4, 12), generator=g)
    stamps = random_stamp(4, 12 + 15, seed=2)
    # history 12 + 15 steps > max_context 16: five cached steps, then ten with a sliding window
    cached = run(model, s1, s2, stamps, 15, 16, use_cache=True, **GREEDY)
    assert_same_tokens(cached, run(model, s1, s2, stamps, 15, 16, use_cache=False, **GREEDY))


def test_sampled_tokens_with_and_without_cache_are_identical_under_one_seed(model, meta, history):
    """The RNG draws come in the same order (s1 then s2 of every row, step by step) on both paths."""
    model.eval()
    s1, s2, stamps = history(24, 12)
    cached = run(model, s1, s2, stamps, 12, meta["max_context"], use_cache=True, sample_count=4, **NUCLEUS)
    recomputed = run(model, s1, s2, stamps, 12, meta["max_context"], use_cache=False, sample_count=4, **NUCLEUS)
    assert_same_tokens(cached, recomputed)
    assert cached[0].shape == (12, 36)
    assert torch.equal(cached[0][:4, :24], s1[:1].expand(4, -1))  # the samples of a series are adjacent
    paths = cached[0][:4, 24:]
    assert len(set(map(tuple, paths.tolist()))) > 1  # the sample paths differ: it did sample


def test_cached_generation_computes_one_position_per_step_until_the_window_slides(model, meta, history):
    model.eval()
    s1, s2, stamps = history(28, 10)
    lengths = []
    hidden_states = model.hidden_states

    def spy(s1_ids, s2_ids, stamp=None, padding_mask=None, cache=None):
        lengths.append(s1_ids.shape[1])
        return hidden_states(s1_ids, s2_ids, stamp, padding_mask, cache=cache)

    model.hidden_states = spy
    run(model, s1, s2, stamps, 10, meta["max_context"], use_cache=True, **GREEDY)
    # the history once, then one position per step while 28 + i <= 32, then the 32-token window
    assert lengths == [28, 1, 1, 1, 1, 32, 32, 32, 32, 32]
    lengths.clear()
    run(model, s1, s2, stamps, 10, meta["max_context"], use_cache=False, **GREEDY)
    assert lengths == [28, 29, 30, 31, 32, 32, 32, 32, 32, 32]


def test_generate_forecasts_are_bit_identical_with_and_without_cache(tok, model, cases, random_stamp):
    tok.eval(), model.eval()
    x = cases["x"][:, :24]
    x_stamp, y_stamp = random_stamp(3, 24, seed=5), random_stamp(3, 8, seed=6)
    out = [generate(tok, model, x, x_stamp, y_stamp, 8, 32, use_cache=use_cache, **GREEDY) for use_cache in (True, False)]
    assert out[0].shape == (3, 8, 6) and out[0].dtype == torch.float32
    assert torch.equal(out[0], out[1])


def test_kv_cache_rejects_more_positions_than_it_holds():
    cache = KVCache(max_len=5)
    k = torch.randn(2, 1, 3, 4)
    keys, values = cache.append(k, k + 1)
    assert keys.shape == (2, 1, 3, 4) and torch.equal(keys, k) and torch.equal(values, k + 1)
    keys, _ = cache.append(k[:, :, :2], k[:, :, :2])
    assert cache.length == 5 and torch.equal(keys[:, :, 3:], k[:, :, :2])
    with pytest.raises(ValueError, match="holds 5 positions"):
        cache.append(k[:, :, :1], k[:, :, :1])
    cache.repeat_interleave(3)
    assert cache.k.shape[0] == 6 and torch.equal(cache.k[1], cache.k[0]) and torch.equal(cache.k[3], cache.k[5])


def cached_and_recomputed(model, tokens, next_s1):
    """The newest of 20 positions (``tokens``: s1, s2, stamps of history(20, 0)) through a cache
    filled with the first 19 (model.decoding's fused step) and by recomputing the window (the module
    path): ((hidden, s1, s2) cached, the same recomputed)."""
    s1, s2, stamps = tokens
    with torch.no_grad():
        want_s1, want_hidden = model.decode_s1(s1, s2, stamps)
        want_s2 = model.decode_s2(want_hidden, next_s1)
        cache = model.new_cache(20)
        _, hidden = model.decode_s1(s1[:, :19], s2[:, :19], stamps[:, :19], cache=cache)
        model.decode_s2(hidden, s1[:, 19:], cache=cache)
        got_s1, got_hidden = model.decode_s1(s1[:, 19:], s2[:, 19:], stamps[:, 19:], cache=cache)
        got_s2 = model.decode_s2(got_hidden, next_s1, cache=cache)
    assert cache.length == 20 and cache.dep.length == 20
    return (got_hidden, got_s1, got_s2), (want_hidden[:, -1:], want_s1[:, -1:], want_s2)


def test_a_cached_step_computes_the_logits_of_recomputing_the_window(model, history):
    """decode_s1/decode_s2 with a filled cache (model.decoding's fused step) against the module path."""
    model.eval()
    got, want = cached_and_recomputed(model, history(20, 0), torch.tensor([[3], [7], [11]]))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class AttentionDtypes(TorchFunctionMode):
    """Records how each attention inside it ran: ("sdpa", dtype of the queries) for torch's fused
    kernel, ("matmuls", dtype) for blocks' CPU bf16 attention (its scores come from one baddbmm)."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.seen.append(("sdpa", args[0].dtype))
        elif func is torch.baddbmm:
            self.seen.append(("matmuls", args[1].dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("precision", ["fp32", "bf16 weights", "bf16 autocast"])
def test_a_cached_step_matches_the_recomputed_window_in_each_precision(model, history, precision):
    """The cached step and the module path attend through the same function (blocks.attention), so
    on a CPU both compute attention the same way: torch's fused kernel in fp32, two bf16 matmuls
    around a softmax in bf16 (weights or autocast); and their logits agree.

    Tolerance: the two paths do the same arithmetic in another order (one position against the
    window's matmuls, fused against separate projections), so each op may round differently by a
    unit of the dtype, and a step has about a dozen such ops in a row (two blocks and the
    dependency layer). Allowed: 8 x eps(dtype) x the largest logit. bf16 (eps 2**-7, logits up to
    about 2.7): 0.17, seen 0.03; fp32: 2.5e-6, seen 9e-7. A wrong position, mask or cache row moves
    logits by tenths, far outside either.
    """
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    model = model.to(dtype if precision == "bf16 weights" else torch.float32).eval()
    region = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16 autocast")
    tokens = history(20, 0)  # the fp32 tokenizer's encoding, outside the recorded region
    with region, AttentionDtypes() as attention:
        got, want = cached_and_recomputed(model, tokens, torch.tensor([[3], [7], [11]]))
    assert got[1].dtype == dtype and got[2].dtype == dtype
    for name, a, b in zip(("hidden", "s1 logits", "s2 logits"), got, want):
        tol = 8 * torch.finfo(dtype).eps * float(b.abs().max())
        err = float((a.float() - b.float()).abs().max())
        assert err <= tol, f"{precision}: cached-step {name} differ from the recomputed window's by {err} > {tol}"
    # blocks.attention's CPU rule holds on both paths: fp32 through the fused kernel, bf16 as matmuls
    expected = {("sdpa", torch.float32)} if precision == "fp32" else {("matmuls", torch.bfloat16)}
    assert attention.seen and set(attention.seen) == expected, attention.seen


def test_a_cached_step_takes_one_query_after_the_prefill(model):
    model.eval()
    cache = model.new_cache(10)
    s = torch.zeros(1, 4, dtype=torch.long)
    with torch.no_grad():
        model.decode_s1(s, s, cache=cache)
        assert cache.length == 4
        with pytest.raises(ValueError, match="one query"):
            model.decode_s1(s[:, :2], s[:, :2], cache=cache)
        with pytest.raises(ValueError, match=r"model.eval\(\)"):
            model.train().decode_s1(s[:, :1], s[:, :1], cache=cache)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greedy_tokens_with_and_without_cache_are_identical_on_cuda(model, meta, history):
    model.eval().cuda()
    s1, s2, stamps = (t.cuda() for t in history(28, 10))
    cached = run(model, s1, s2, stamps, 10, meta["max_context"], use_cache=True, **GREEDY)
    assert cached[0].is_cuda
    assert_same_tokens(cached, run(model, s1, s2, stamps, 10, meta["max_context"], use_cache=False, **GREEDY))


def test_a_generator_makes_the_sampled_tokens_independent_of_torch_s_global_stream(model, meta, history):
    """What lets concurrent seeded requests to the served model agree: each draws from its own generator."""
    model.eval()
    s1, s2, stamps = history(20, 6)

    def sampled(global_seed: int):
        torch.manual_seed(global_seed)
        return generate_tokens(model, s1, s2, stamps, 6, meta["max_context"], sample_count=2,
                               generator=torch.Generator().manual_seed(7), **NUCLEUS)

    assert_same_tokens(sampled(0), sampled(1))
    unseeded = run(model, s1, s2, stamps, 6, meta["max_context"], True, seed=0, sample_count=2, **NUCLEUS)
    assert not torch.equal(unseeded[0], run(model, s1, s2, stamps, 6, meta["max_context"], True, seed=1,
                                            sample_count=2, **NUCLEUS)[0])


def test_stop_ends_the_token_loop_with_its_reason(model, meta, history):
    model.eval()
    s1, s2, stamps = history(20, 6)
    steps = []

    def stop() -> str:
        steps.append(1)
        return "enough" if len(steps) > 2 else ""

    with pytest.raises(GenerationStopped, match="enough"):
        generate_tokens(model, s1, s2, stamps, 6, meta["max_context"], stop=stop, **GREEDY)
    assert len(steps) == 3
