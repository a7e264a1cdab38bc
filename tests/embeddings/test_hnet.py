"""HashedNets: every coordinate is one hashed, signed weight of a flat array."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.hashing import universal_hash


def test_each_coordinate_is_its_hashed_weight_times_its_sign():
    vocab, budget, dim = 50, 37, 8
    emb = make_embedding(vocab, budget, dim, "hnet", seed=2)
    ids = torch.tensor([0, 1, 7, 49])
    out = emb(ids)
    for row, i in enumerate(ids.tolist()):
        for k in range(dim):
            key = torch.tensor(i * dim + k)  # the (id, coordinate) pair as one key
            where = int(universal_hash(key, emb.hash.coefficients, budget)[0])
            sign = 2 * int(universal_hash(key, emb.sign_hash.coefficients, 2)[0]) - 1
            assert out[row, k] == sign * emb.weights[where]


def test_signs_are_random_and_can_be_turned_off():
    ids = torch.arange(200)
    signed = make_embedding(200, 64, 8, "hnet", seed=3)
    plain = make_embedding(200, 64, 8, "hnet", seed=3, signed=False)
    assert plain.sign_hash is None and plain.num_buffer_bytes() < signed.num_buffer_bytes()
    where = signed.hash(signed.keys(ids))[..., 0]
    ratio = signed(ids) / signed.weights[where]  # (200, 8) of +-1
    assert set(ratio.round().unique().tolist()) == {-1.0, 1.0}
    assert 0.4 < (ratio > 0).float().mean() < 0.6
    unsigned = plain(ids)
    assert torch.equal(unsigned, plain.weights[plain.hash(plain.keys(ids))[..., 0]])


def test_ids_share_weights_only_through_collisions():
    # With far more weights than coordinates, two ids' coordinates almost never share a weight.
    emb = make_embedding(1000, 1 << 20, 8, "hnet", seed=4)
    slots = emb.hash(emb.keys(torch.arange(1000)))[..., 0]
    assert len(slots.unique()) > 0.99 * slots.numel()


@pytest.mark.parametrize("budget", [16, 100, 1023, 4096])
def test_uses_the_whole_budget(budget):
    assert make_embedding(500, budget, 16, "hnet").num_parameters() == budget


def test_nothing_is_stored_per_id():
    small, large = make_embedding(10, 64, 8, "hnet"), make_embedding(10**6, 64, 8, "hnet")
    assert small.num_buffer_bytes() == large.num_buffer_bytes() == 2 * 3 * 8


def test_smallest_budget_is_one_embedding():
    with pytest.raises(BudgetTooSmall, match="use at least 16$") as caught:
        make_embedding(100, 15, 16, "hnet")
    assert caught.value.minimum == 16
    assert make_embedding(100, 16, 16, "hnet").num_parameters() == 16
