"""Bloom embeddings: the sum of c hashed rows of one table."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.hashing import universal_hash


def test_output_is_the_sum_of_the_hashed_rows():
    emb = make_embedding(100, 20 * 8, 8, "bloom", n_chunks=3, seed=1)
    ids = torch.tensor([0, 5, 99])
    rows = universal_hash(ids, emb.hash.coefficients, 20)  # (3, 3)
    expected = torch.stack([emb.table[r].sum(0) for r in rows])
    torch.testing.assert_close(emb(ids), expected)


def test_a_repeated_row_counts_once_per_hash():
    emb = make_embedding(30, 8, 8, "bloom", n_chunks=3, seed=1)  # one row: every hash hits it
    torch.testing.assert_close(emb(torch.arange(30)), 3 * emb.table[0].expand(30, 8))


@pytest.mark.parametrize("budget, rows", [(32, 2), (100, 6), (1024, 64)])
def test_rows_are_budget_over_dim(budget, rows):
    emb = make_embedding(1000, budget, 16, "bloom", n_chunks=4)
    assert emb.rows == rows and emb.num_parameters() == rows * 16


def test_smallest_budget_is_one_row():
    with pytest.raises(BudgetTooSmall, match="use at least 16$"):
        make_embedding(100, 15, 16, "bloom")
    assert make_embedding(100, 16, 16, "bloom").num_parameters() == 16
