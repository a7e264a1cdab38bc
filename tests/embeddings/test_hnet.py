"""HashedNets: every coordinate is one hashed, signed weight of a flat array."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.hashing import PRIME


def reference_hash(i: int, k: int, coefficients: torch.Tensor) -> int:
    """The module docstring's h before the final reduction, in Python integers."""
    a1, a2, a3, b = coefficients.tolist()
    return (a1 * (i >> 30) + a2 * (i & (2**30 - 1)) + a3 * k + b) % PRIME


def test_each_coordinate_is_its_hashed_weight_times_its_sign():
    vocab, budget, dim = 2**31, 37, 8
    emb = make_embedding(vocab, budget, dim, "hnet", seed=2)
    ids = torch.tensor([0, 1, 7, 2**30 + 5, 2**31 - 1])  # ids past 2^30 use both halves
    out = emb(ids)
    for row, i in enumerate(ids.tolist()):
        for k in range(dim):
            where = reference_hash(i, k, emb.index_coefficients) % budget
            sign = 1 - 2 * (reference_hash(i, k, emb.sign_coefficients) % 2)
            assert out[row, k] == sign * emb.weights[where]


def test_signs_are_random_and_can_be_turned_off():
    ids = torch.arange(200)
    signed = make_embedding(200, 64, 8, "hnet", seed=3)
    plain = make_embedding(200, 64, 8, "hnet", seed=3, signed=False)
    assert plain.num_buffer_bytes() == 4 * 8 and signed.num_buffer_bytes() == 2 * 4 * 8
    assert torch.equal(plain(ids), plain.weights[plain.slots(ids)])
    ratio = signed(ids) / signed.weights[signed.slots(ids)]  # (200, 8) of +-1
    assert set(ratio.round().unique().tolist()) == {-1.0, 1.0}
    assert 0.45 < (ratio > 0).float().mean() < 0.55


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_collide_no_more_often_than_uniform_slots_would(seed):
    budget, n = 4096, 2000 * 8
    slots = make_embedding(2000, budget, 8, "hnet", seed=seed).slots(torch.arange(2000))
    counts = torch.bincount(slots.reshape(-1), minlength=budget).double()
    pairs = float((counts * (counts - 1) / 2).sum())
    # Uniform slots: about 31000 colliding pairs (sd about 180). A linear hash of consecutive
    # keys spreads them more evenly than chance (about 0.8 of it here), never much less so.
    assert pairs < 1.05 * n * (n - 1) / 2 / budget
    assert (counts > 0).float().mean() > 0.97  # uniform: 1 - exp(-4) = 0.98 of weights used


@pytest.mark.parametrize("budget", [16, 100, 1023, 4096])
def test_uses_the_whole_budget(budget):
    assert make_embedding(500, budget, 16, "hnet").num_parameters() == budget


def test_nothing_is_stored_per_id():
    small, large = make_embedding(10, 64, 8, "hnet"), make_embedding(10**6, 64, 8, "hnet")
    assert small.num_buffer_bytes() == large.num_buffer_bytes() == 2 * 4 * 8


def test_smallest_budget_is_one_embedding():
    with pytest.raises(BudgetTooSmall, match="use at least 16$") as caught:
        make_embedding(100, 15, 16, "hnet")
    assert caught.value.minimum == 16
    assert make_embedding(100, 16, 16, "hnet").num_parameters() == 16
