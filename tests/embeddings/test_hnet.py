"""HashedNets: every coordinate is one hashed (optionally signed) weight of a flat array."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.hashing import PRIME, draw_coefficients, hash_mod_prime
from cce_bench.embeddings.hnet import pair_keys
from tests.embeddings.test_hashing import reference


def reference_hash(i: int, k: int, coefficients: torch.Tensor) -> int:
    """The module docstring's u(i * dim + k), in Python integers (dim 8 here)."""
    return reference([i * 8 + k], coefficients.unsqueeze(0), PRIME)[0][0]


def test_each_coordinate_is_its_hashed_weight_times_its_sign():
    vocab, budget, dim = 2**31, 37, 8
    emb = make_embedding(vocab, budget, dim, "hnet", seed=2, signed=True)
    ids = torch.tensor([0, 1, 7, 2**30 + 5, 2**31 - 1])  # ids past 2^30 use both halves
    out = emb(ids)
    for row, i in enumerate(ids.tolist()):
        for k in range(dim):
            where = reference_hash(i, k, emb.index_coefficients) % budget
            sign = 1 - 2 * (reference_hash(i, k, emb.sign_coefficients) % 2)
            assert out[row, k] == sign * emb.weights[where]


def test_unsigned_by_default_as_the_authors_ran_it():
    emb = make_embedding(200, 64, 8, "hnet", seed=3)
    assert not emb.signed and emb.sign_coefficients is None
    assert emb.config() == {"size": 64, "signed": False}
    ids = torch.arange(200)
    assert torch.equal(emb(ids), emb.weights[emb.slots(ids)])


def test_signs_are_random_when_asked():
    ids = torch.arange(200)
    signed = make_embedding(200, 64, 8, "hnet", seed=3, signed=True)
    plain = make_embedding(200, 64, 8, "hnet", seed=3, signed=False)
    assert plain.num_buffer_bytes() == 4 * 8 and signed.num_buffer_bytes() == 2 * 4 * 8
    assert torch.equal(plain(ids), plain.weights[plain.slots(ids)])
    ratio = signed(ids) / signed.weights[signed.slots(ids)]  # (200, 8) of +-1
    assert set(ratio.round().unique().tolist()) == {-1.0, 1.0}
    assert 0.45 < (ratio > 0).float().mean() < 0.55


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_collide_as_often_as_uniform_slots_would(seed):
    budget, n = 4096, 2000 * 8
    slots = make_embedding(2000, budget, 8, "hnet", seed=seed).slots(torch.arange(2000))
    counts = torch.bincount(slots.reshape(-1), minlength=budget).double()
    pairs = float((counts * (counts - 1) / 2).sum())
    # Uniform slots: about 31,000 colliding pairs (sd about 180, 0.6%).
    assert abs(pairs / (n * (n - 1) / 2 / budget) - 1) < 0.04
    assert (counts > 0).float().mean() > 0.97  # uniform: 1 - exp(-4) = 0.98 of weights used


def pairs_sharing_two(slots: torch.Tensor, size: int) -> torch.Tensor:
    """slots (F, N, d) of F functions -> (F,): id pairs that share two or more weights.

    Sorting the slots of each function puts the (id, coordinate) pairs of a weight side by
    side; comparing the sorted array with itself shifted by o = 1, 2, ... lists every pair of
    them, whose id pairs are then counted.
    """
    functions, n, d = slots.shape
    key, order = torch.sort((torch.arange(functions).view(-1, 1, 1) * size + slots).reshape(-1))
    owner = torch.arange(n).view(1, n, 1).expand(functions, n, d).reshape(-1)[order]
    codes = []
    for o in range(1, n * d):
        same = key[o:] == key[:-o]
        if not bool(same.any()):
            break
        a, b, f = owner[:-o][same], owner[o:][same], key[:-o][same] // size
        code = (f * n + torch.minimum(a, b)) * n + torch.maximum(a, b)
        codes.append(code[a != b])
    codes, shared = torch.unique(torch.cat(codes), return_counts=True)
    return torch.bincount(codes[shared >= 2] // (n * n), minlength=functions)


def test_no_pair_of_ids_shares_many_weights():
    # Issue 11: a hash linear in (id, coordinate) gives each id's slots as an arithmetic
    # progression, so two ids that share one weight share most of them. Over 1,000 such
    # functions on 500 ids (dim 8, 1,024 weights), id pairs sharing two or more weights were
    # 8.2x as many as under uniform slots on average, 99.9% of functions above 2x, the worst
    # 48x. Mixing the key i * dim + k: 1.00x on average, the worst 1.29x (uniform slots' own
    # worst of 1,000 draws: 1.27x).
    functions, n, d, size = 1000, 500, 8, 1024
    coefficients = draw_coefficients(functions, torch.Generator().manual_seed(0))
    slots = hash_mod_prime(pair_keys(torch.arange(n), d), coefficients) % size  # (n, d, F)
    hashed = pairs_sharing_two(slots.permute(2, 0, 1), size).double()
    uniform = torch.randint(0, size, (250, n, d), generator=torch.Generator().manual_seed(1))
    expected = float(pairs_sharing_two(uniform, size).double().mean())  # about 231
    ratio = hashed / expected
    assert float((ratio > 2).double().mean()) <= 0.001
    assert float(ratio.max()) < 1.5
    assert abs(float(ratio.mean()) - 1) < 0.05


def test_slots_are_the_hash_of_the_packed_pair():
    emb = make_embedding(100, 64, 8, "hnet", seed=1)
    ids = torch.tensor([0, 1, 99])
    keys = ids.unsqueeze(-1) * 8 + torch.arange(8)
    expected = hash_mod_prime(keys, emb.index_coefficients.unsqueeze(0))[..., 0] % 64  # (3, 8)
    assert torch.equal(emb.slots(ids), expected)


@pytest.mark.parametrize("budget", [16, 100, 1023, 4096])
def test_uses_the_whole_budget(budget):
    assert make_embedding(500, budget, 16, "hnet").num_parameters() == budget


def test_nothing_is_stored_per_id():
    small, large = make_embedding(10, 64, 8, "hnet"), make_embedding(10**6, 64, 8, "hnet")
    assert small.num_buffer_bytes() == large.num_buffer_bytes() == 4 * 8  # one hash
    signed = make_embedding(10**6, 64, 8, "hnet", signed=True)
    assert signed.num_buffer_bytes() == 2 * 4 * 8


def test_smallest_budget_is_one_embedding():
    with pytest.raises(BudgetTooSmall, match="use at least 16$") as caught:
        make_embedding(100, 15, 16, "hnet")
    assert caught.value.minimum == 16
    assert make_embedding(100, 16, 16, "hnet").num_parameters() == 16
