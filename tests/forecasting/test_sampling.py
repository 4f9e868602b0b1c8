"""Drawing a token from logits (model.generation): top-k, nucleus (top-p) and temperature."""
from __future__ import annotations

import pytest
import torch

from kronos_exp.forecasting.generation import filter_logits, sample_next


def test_top_k_one_is_greedy():
    logits = torch.randn(64, 37, generator=torch.Generator().manual_seed(0))
    filtered = filter_logits(logits, top_k=1)
    assert torch.equal(torch.isfinite(filtered).sum(-1), torch.ones(64, dtype=torch.long))
    assert torch.equal(filtered.argmax(-1), logits.argmax(-1))
    assert torch.equal(filtered.gather(-1, logits.argmax(-1, keepdim=True)),
                       logits.gather(-1, logits.argmax(-1, keepdim=True)))
    for seed in range(3):
        torch.manual_seed(seed)
        picks = sample_next(logits, temperature=1.7, top_k=1, top_p=0.5)
        assert picks.shape == (64, 1) and torch.equal(picks[:, 0], logits.argmax(-1))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]])
    filtered = filter_logits(logits, top_k=3)
    assert torch.isfinite(filtered).tolist() == [[False, True, False, True, True]]
    assert torch.equal(filtered[torch.isfinite(filtered)], torch.tensor([2.0, 1.5, 0.9]))
    assert torch.equal(filter_logits(logits, top_k=50), logits)  # k beyond the vocabulary keeps all
    assert torch.equal(filter_logits(logits), logits)  # the defaults filter nothing
    assert torch.equal(logits, torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]]))  # input left alone


def test_top_k_takes_precedence_over_top_p_as_in_the_published_sampler():
    logits = probs_logits(0.125, 0.5, 0.125, 0.25)
    # top_p=0.3 alone keeps only the top token; with top_k=2 the published code applies top_k alone.
    assert int(torch.isfinite(filter_logits(logits, top_p=0.3)).sum()) == 1
    assert int(torch.isfinite(filter_logits(logits, top_k=2, top_p=0.3)).sum()) == 2


def probs_logits(*probs):
    return torch.tensor([probs], dtype=torch.float64).log()


@pytest.mark.parametrize("top_p, kept", [
    (0.3, [True, False, False, False]),   # the top token alone already has 0.5 >= 0.3
    (0.5, [True, False, False, False]),   # exactly reached by one token
    (0.6, [True, True, False, False]),
    (0.75, [True, True, False, False]),   # exactly reached by two tokens
    (0.8, [True, True, True, False]),
    (0.99, [True, True, True, True]),
])
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p, kept):
    # probabilities 0.5, 0.25, 0.125, 0.125 (exact in binary), given out of order
    logits = probs_logits(0.125, 0.5, 0.125, 0.25)
    order = [1, 3, 0, 2]  # positions by decreasing probability; the two 0.125 tie
    filtered = filter_logits(logits, top_p=top_p)
    finite = torch.isfinite(filtered)[0]
    assert int(finite.sum()) == sum(kept)
    for rank, keep in enumerate(kept[:2]):  # the untied ranks are determined exactly
        assert bool(finite[order[rank]]) == keep
    assert torch.equal(filtered[torch.isfinite(filtered)], logits[torch.isfinite(filtered)])


@pytest.mark.parametrize("top_p, n_kept", [(0.2, 1), (0.25, 1), (0.3, 2), (0.5, 2), (0.75, 3), (0.9, 4)])
def test_top_p_at_exact_mass_boundaries(top_p, n_kept):
    uniform = torch.zeros(3, 4)  # probabilities of exactly 0.25; cumulative 0.25, 0.5, 0.75, 1
    assert torch.equal(torch.isfinite(filter_logits(uniform, top_p=top_p)).sum(-1), torch.full((3,), n_kept))


@pytest.mark.parametrize("top_p", [0.0, 1e-9, 0.2])
def test_top_p_always_keeps_at_least_one_token(top_p):
    logits = torch.randn(16, 9, generator=torch.Generator().manual_seed(1))
    filtered = filter_logits(logits, top_p=top_p)
    assert torch.equal(torch.isfinite(filtered).sum(-1), torch.ones(16, dtype=torch.long))
    assert torch.equal(filtered.argmax(-1), logits.argmax(-1))
    torch.manual_seed(0)
    assert torch.equal(sample_next(logits, top_p=top_p)[:, 0], logits.argmax(-1))


def test_top_p_on_a_batch_filters_each_row():
    logits = torch.cat([probs_logits(0.5, 0.25, 0.125, 0.125), probs_logits(0.125, 0.125, 0.25, 0.5),
                        probs_logits(0.7, 0.1, 0.1, 0.1)])
    kept = torch.isfinite(filter_logits(logits, top_p=0.6))
    assert kept.tolist() == [[True, True, False, False], [False, False, True, True], [True, False, False, False]]


def test_sample_next_follows_the_filtered_distribution():
    torch.manual_seed(0)
    logits = probs_logits(0.5, 0.25, 0.125, 0.125).float().repeat(4000, 1)
    picks = sample_next(logits, top_p=0.75)[:, 0]
    assert set(picks.tolist()) == {0, 1}
    share = (picks == 0).float().mean().item()
    assert abs(share - 2 / 3) < 0.04  # renormalised over the kept mass 0.75
    picks = sample_next(logits, temperature=1.0)[:, 0]
    counts = torch.bincount(picks, minlength=4).float() / len(picks)
    assert torch.allclose(counts, torch.tensor([0.5, 0.25, 0.125, 0.125]), atol=0.03)
