"""Hash embeddings: c hashed pool vectors mixed by hashed importance weights."""

from __future__ import annotations

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.hashing import universal_hash
from cce_bench.embeddings.hemb import pool_sizes


def test_output_is_the_importance_weighted_sum_of_hashed_components():
    emb = make_embedding(80, 500, 8, "hemb", n_chunks=3, seed=5)
    ids = torch.tensor([0, 3, 79])
    rows = universal_hash(ids, emb.component_hash.coefficients, emb.buckets)  # (3, 3)
    weight_rows = universal_hash(ids, emb.importance_hash.coefficients, emb.weight_rows)[:, 0]
    for n in range(len(ids)):
        expected = sum(emb.importance[weight_rows[n], j] * emb.components[rows[n, j]]
                       for j in range(3))
        torch.testing.assert_close(emb(ids[n]), expected)


@pytest.mark.parametrize("budget, dim, hashes, buckets, weight_rows", [
    (1024, 16, 4, 32, 128),  # half each: 512 + 512
    (1000, 16, 4, 31, 126),  # 496 + 504
    (77, 16, 4, 2, 11),  # 32 + 44, one value left over
    (20, 16, 4, 1, 1),  # the smallest budget
    (11, 1, 10, 1, 1),  # half would leave too little for one importance row
])
def test_pools_split_the_budget(budget, dim, hashes, buckets, weight_rows):
    assert pool_sizes(budget, dim, hashes) == (buckets, weight_rows)
    emb = make_embedding(100, budget, dim, "hemb", n_chunks=hashes)
    assert emb.num_parameters() == buckets * dim + weight_rows * hashes
    assert budget - hashes < emb.num_parameters() <= budget


def test_smallest_budget_is_one_row_of_each_pool():
    with pytest.raises(BudgetTooSmall, match="use at least 20$"):
        make_embedding(100, 19, 16, "hemb", n_chunks=4)
