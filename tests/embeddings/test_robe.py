"""ROBE: chunks are windows of one circular array at hashed offsets."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, ConfigError, make_embedding
from cce_bench.embeddings.hashing import universal_hash


def window(array: torch.Tensor, start: int, width: int) -> torch.Tensor:
    return torch.stack([array[(start + t) % len(array)] for t in range(width)])


def test_chunks_are_windows_at_hashed_offsets():
    budget, dim, chunks = 37, 8, 4
    emb = make_embedding(60, budget, dim, "robe", chunks, seed=2)
    ids = torch.arange(60)
    offsets = universal_hash(ids, emb.hash.coefficients, budget)  # (60, 4)
    expected = torch.stack([torch.cat([window(emb.array, int(o), 2) for o in row])
                            for row in offsets])
    assert torch.equal(emb(ids), expected)


def test_windows_wrap_around_the_end():
    budget, dim, chunks = 16, 16, 2  # windows of 8 in an array of 16
    emb = make_embedding(400, budget, dim, "robe", chunks, seed=3)
    offsets = emb.hash(torch.arange(400))
    i, j = map(int, (offsets > budget - 8).nonzero()[0])  # a chunk that starts near the end
    start = int(offsets[i, j])
    expected = torch.cat([emb.array[start:], emb.array[:8 - (budget - start)]])
    assert torch.equal(emb(torch.tensor(i))[8 * j:8 * j + 8], expected)


@pytest.mark.parametrize("budget", [16, 99, 1024])
def test_uses_the_whole_budget(budget):
    assert make_embedding(1000, budget, 16, "robe", 4).num_parameters() == budget


def test_smallest_budget_is_one_embedding():
    with pytest.raises(BudgetTooSmall, match="use at least 16$"):
        make_embedding(100, 15, 16, "robe", 4)
    assert make_embedding(100, 16, 16, "robe", 4).num_parameters() == 16


def test_dim_must_split_into_chunks():
    with pytest.raises(ConfigError, match="dim 10 must be a positive multiple of n_chunks 4"):
        make_embedding(100, 100, 10, "robe", 4)
