"""The universal hash family: range, exactness for large ids, collisions, determinism."""

from __future__ import annotations

import pytest
import torch

from cce_bench.embeddings.hashing import PRIME, UniversalHash, draw_coefficients, universal_hash
from tests.conftest import requires_cuda


def reference(ids: list[int], coefficients: torch.Tensor, m: int) -> list[list[int]]:
    """The definition in Python integers (no overflow possible)."""
    out = []
    for x in ids:
        hi, lo = x >> 30, x & ((1 << 30) - 1)
        out.append([((int(a1) * hi + int(a2) * lo + int(b)) % PRIME) % m
                    for a1, a2, b in coefficients.tolist()])
    return out


def colliding_pairs(buckets: torch.Tensor, m: int) -> int:
    counts = torch.bincount(buckets, minlength=m).double()
    return int((counts * (counts - 1) / 2).sum())


EDGES = [0, 1, 2**30 - 1, 2**30, 2**31 - 2, 2**31 - 1, 2**31, 2**32 + 7, 2**45 + 3,
         2**60 - 2**30, 2**60 - 1]


@pytest.mark.parametrize("m", [1, 2, 1000, 2**20 + 7, PRIME])
def test_values_match_the_definition_up_to_two_to_the_sixty(m):
    coefficients = draw_coefficients(4, torch.Generator().manual_seed(0))
    ids = EDGES + torch.randint(0, 2**60, (200,), generator=torch.Generator().manual_seed(1)).tolist()
    h = universal_hash(torch.tensor(ids), coefficients, m)
    assert h.dtype == torch.int64 and h.shape == (len(ids), 4)
    assert int(h.min()) >= 0 and int(h.max()) < m
    assert h.tolist() == reference(ids, coefficients, m)


def test_coefficients_lie_in_the_family():
    c = draw_coefficients(10_000, torch.Generator().manual_seed(0))
    assert int(c[:, :2].min()) >= 1 and int(c[:, :2].max()) < PRIME
    assert int(c[:, 2].min()) >= 0 and int(c[:, 2].max()) < PRIME


def test_each_function_collides_random_ids_like_a_random_function():
    # n ids into m buckets: a uniformly random function has n(n-1)/2m colliding pairs on
    # average, here 199,990, with a standard deviation of about its square root (447, 0.2%);
    # 3% is 15 standard deviations.
    n, m = 20_000, 1000
    gen = torch.Generator().manual_seed(7)
    expected = n * (n - 1) / 2 / m
    for high in (2**31, 2**60):
        ids = torch.unique(torch.randint(0, high, (n + 100,), generator=gen))[:n]
        h = UniversalHash(5, m, torch.Generator().manual_seed(3))(ids)  # (n, 5)
        for f in range(5):
            assert abs(colliding_pairs(h[:, f], m) / expected - 1) < 0.03, (high, f)


@pytest.mark.parametrize("step", [1, 2**30, 1000, PRIME, 2**31])
def test_the_family_collides_structured_ids_at_the_uniform_rate(step):
    # Arithmetic progressions (dense ids, ids that differ only in the high half, multiples of
    # the prime or of m). What a 2-universal family promises is the average over its
    # functions: about n(n-1)/2m pairs. Single linear functions are uneven here: most put
    # ~5% fewer pairs together than a random function, a few percent put 20% more, and the
    # rare one several times more, so the test averages 200 functions (observed 0.98-1.05).
    n, m, functions = 5000, 100, 200
    ids = torch.arange(n) * step
    h = UniversalHash(functions, m, torch.Generator().manual_seed(0))(ids)  # (n, functions)
    counts = torch.zeros(functions, m).scatter_add_(1, h.T, torch.ones(functions, n))
    ratio = (counts * (counts - 1) / 2).sum(1) / (n * (n - 1) / 2 / m)  # (functions,)
    assert 0.9 < float(ratio.mean()) < 1.15


def test_pairwise_collision_probability_over_the_family():
    # Universality itself: for a fixed pair of ids, the fraction of random functions that
    # collide them is about 1/m (binomial, 20,000 functions, m = 50: 400 +- 20).
    m = 50
    coefficients = draw_coefficients(20_000, torch.Generator().manual_seed(5))
    for x, y in [(0, 1), (5, 5 + m), (1, 2**30), (2**31 - 1, 2**31), (3, 3 + PRIME),
                 (2**60 - 1, 2**59)]:
        hx, hy = universal_hash(torch.tensor([x, y]), coefficients, m)
        hits = int((hx == hy).sum())
        assert 400 - 100 < hits < 400 + 100, (x, y, hits)


def test_same_generator_seed_same_function_other_seed_other_function():
    ids = torch.randint(0, 2**40, (1000,))
    a = UniversalHash(3, 997, torch.Generator().manual_seed(11))
    b = UniversalHash(3, 997, torch.Generator().manual_seed(11))
    c = UniversalHash(3, 997, torch.Generator().manual_seed(12))
    assert torch.equal(a(ids), b(ids))
    assert not torch.equal(a(ids), c(ids))
    assert torch.equal(a(ids), a(ids))


def test_values_do_not_depend_on_id_dtype_shape_or_layout():
    h = UniversalHash(2, 1009, torch.Generator().manual_seed(0))
    ids = torch.randint(0, 2**31 - 1, (6, 8))
    expected = h(ids)
    assert expected.shape == (6, 8, 2)
    assert torch.equal(h(ids.to(torch.int32)), expected)
    assert torch.equal(h(ids.T.contiguous()), expected.transpose(0, 1))
    assert torch.equal(h(ids.T), expected.transpose(0, 1))  # non-contiguous
    assert torch.equal(h(ids.reshape(-1)), expected.reshape(-1, 2))
    assert torch.equal(h(torch.tensor(int(ids[2, 3]))), expected[2, 3])


def test_redraw_replaces_one_function():
    h = UniversalHash(3, 101, torch.Generator().manual_seed(0))
    before = h.coefficients.clone()
    h.redraw(1, torch.Generator().manual_seed(9))
    assert torch.equal(h.coefficients[[0, 2]], before[[0, 2]])
    assert not torch.equal(h.coefficients[1], before[1])


def test_coefficients_travel_with_the_state_dict():
    a = UniversalHash(2, 101, torch.Generator().manual_seed(0))
    b = UniversalHash(2, 101, torch.Generator().manual_seed(1))
    b.load_state_dict(a.state_dict())
    ids = torch.arange(500)
    assert torch.equal(a(ids), b(ids))


@requires_cuda
def test_cuda_gives_the_same_values():
    h = UniversalHash(4, 12345, torch.Generator().manual_seed(0))
    ids = torch.tensor(EDGES + list(range(1000)))
    assert torch.equal(h.to("cuda")(ids.cuda()).cpu(), h.cpu()(ids))
