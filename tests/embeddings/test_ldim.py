"""Low-dimensional embeddings: a vocab x r table times a shared r x dim projection."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding


def test_output_is_the_narrow_row_times_the_projection():
    emb = make_embedding(50, 3 * 58, 8, "ldim", seed=1)
    assert emb.table.shape == (50, 3) and emb.projection.shape == (3, 8)
    ids = torch.tensor([0, 17, 49])
    torch.testing.assert_close(emb(ids), emb.table[ids] @ emb.projection)


@pytest.mark.parametrize("budget, rank", [(116, 1), (3 * 116 + 115, 3), (10 * 116, 10)])
def test_rank_is_the_largest_that_fits(budget, rank):
    emb = make_embedding(100, budget, 16, "ldim")
    assert emb.rank == rank and emb.num_parameters() == rank * 116 <= budget


def test_rank_stops_at_dim():
    emb = make_embedding(100, 10**6, 16, "ldim")
    assert emb.rank == 16 and emb.num_parameters() == 16 * 116


def test_smallest_budget_is_rank_one():
    with pytest.raises(BudgetTooSmall, match="use at least 116$"):
        make_embedding(100, 115, 16, "ldim")
    assert make_embedding(100, 116, 16, "ldim").rank == 1
