"""CCE on ROBE arrays: the lookups and each step of cluster() on a small case."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.hashing import universal_hash

VOCAB, DIM, CHUNKS, WIDTH = 40, 8, 2, 4
SIZE = 10  # values per array: windows of 4 overlap and wrap around


def build(**opts):
    return make_embedding(VOCAB, 2 * CHUNKS * SIZE, DIM, "cce_robe", CHUNKS, seed=7,
                          kmeans_backend="torch", **opts)


def window(array: torch.Tensor, start: int) -> torch.Tensor:
    return torch.stack([array[(start + t) % len(array)] for t in range(WIDTH)])


def by_hand(emb) -> torch.Tensor:
    """(VOCAB, c, w): chunk j of id i = window of array 0 at its slot + window of array 1 at its hash."""
    slots1 = universal_hash(torch.arange(VOCAB), emb.hash1.coefficients, SIZE)
    return torch.stack([torch.stack([
        window(emb.table0[j], int(emb.index[i, j])) + window(emb.table1[j], int(slots1[i, j]))
        for j in range(CHUNKS)]) for i in range(VOCAB)])


def test_chunks_are_sums_of_two_circular_windows():
    emb = build()
    assert emb.table0.shape == emb.table1.shape == (CHUNKS, SIZE)
    assert int(emb.index.max()) >= SIZE - WIDTH + 1  # some slot's window wraps around
    torch.testing.assert_close(emb(torch.arange(VOCAB)), by_hand(emb).reshape(VOCAB, DIM))


@pytest.mark.parametrize("budget, size", [(32, 4), (100, 12), (1024, 128)])
def test_parameter_count(budget, size):
    emb = make_embedding(500, budget, 16, "cce_robe", 4)
    assert emb.size == size and emb.rows == size // 4
    assert emb.num_parameters() == 2 * 4 * size <= budget
    assert emb.num_buffer_bytes() == 500 * 4 * 4 + 4 * 4 * 8 + 8  # index, hashes (4 int64 each), round


def test_smallest_budget_is_one_window_per_array():
    with pytest.raises(BudgetTooSmall, match="use at least 32$"):
        make_embedding(100, 31, 16, "cce_robe", 4)


def test_cluster_steps_on_a_small_case():
    emb = build()
    old = emb(torch.arange(VOCAB)).detach().reshape(VOCAB, CHUNKS, WIDTH)  # (a) the old vectors
    old_hash = emb.hash1.coefficients.clone()
    reset = emb.cluster()
    assert reset[0] is emb.table0 and reset[1] is emb.table1  # (f)
    assert (emb.hash1.coefficients != old_hash).all(dim=1).all()  # (d) a new hash per chunk
    k = SIZE // WIDTH
    torch.testing.assert_close(emb(torch.arange(VOCAB)), by_hand(emb).reshape(VOCAB, DIM))

    assert (emb.table0[:, k * WIDTH:] == 0).all()  # (c) centroids laid end to end
    assert (emb.index % WIDTH == 0).all() and (emb.index < k * WIDTH).all()
    centroids = emb.table0[:, :k * WIDTH].reshape(CHUNKS, k, WIDTH).detach()
    assign = (emb.index // WIDTH).long()  # (VOCAB, c)
    for j in range(CHUNKS):
        dist = torch.cdist(old[:, j], centroids[j])  # (VOCAB, k)
        mine = dist.gather(1, assign[:, j:j + 1])[:, 0]
        torch.testing.assert_close(mine, dist.min(1).values)  # nearest centroid
        for r in range(k):  # (b) every id is sampled here, so a centroid is its members' mean
            members = old[assign[:, j] == r, j]
            if len(members):
                torch.testing.assert_close(centroids[j, r], members.mean(0))

    slots1 = universal_hash(torch.arange(VOCAB), emb.hash1.coefficients, SIZE)  # (e)
    sums, counts = torch.zeros(CHUNKS, SIZE), torch.zeros(CHUNKS, SIZE)
    for i in range(VOCAB):
        for j in range(CHUNKS):
            residual = old[i, j] - centroids[j, assign[i, j]]
            for t in range(WIDTH):
                sums[j, (int(slots1[i, j]) + t) % SIZE] += residual[t]
                counts[j, (int(slots1[i, j]) + t) % SIZE] += 1
    torch.testing.assert_close(emb.table1.detach(), sums / counts.clamp(min=1))
    assert int(emb.rounds) == 1


def test_options_of_cluster():
    emb = build(residual_init="zero", reset_optimizer=False)
    assert emb.cluster() == []
    assert (emb.table1 == 0).all()
    first = emb.hash1.coefficients.clone()
    emb.cluster()
    assert not torch.equal(emb.hash1.coefficients, first)  # a new hash every round
