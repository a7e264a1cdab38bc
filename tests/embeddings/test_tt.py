"""TT-Rec: the cores define a table, and forward reads that table."""

from __future__ import annotations

import math

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.tt import (core_layout, factor_dim, factor_vocab, materialise,
                                     tt_params, useful_rank)


def full_table(emb) -> torch.Tensor:
    """The implied vocab x dim table, contracted core by core over whole cores (no gather).

    Core k is (n_k, R, d_k, R'); the train's table is indexed by (i_1..i_c, j_1..j_c) with
    core 1 the most significant digit on both sides.
    """
    t = emb.cores[0].squeeze(1)  # (n_1, d_1, R)
    for core in emb.cores[1:]:
        t = torch.einsum("abr,rcse->acbse", t, core.permute(1, 0, 2, 3))  # (A, n, B, d, R')
        a, n, b, d, r = t.shape
        t = t.reshape(a * n, b * d, r)
    return t.squeeze(-1)  # (prod n, dim)


@pytest.mark.parametrize("vocab,dim,c,budget", [(60, 8, 3, 400), (97, 12, 2, 300),
                                                 (300, 16, 4, 1024), (5, 4, 1, 20),
                                                 (1000, 30, 5, 5000)])
def test_forward_reads_the_table_the_cores_define(vocab, dim, c, budget):
    emb = make_embedding(vocab, budget, dim, "tt", c, seed=0)
    table = full_table(emb)
    ids = torch.arange(vocab)
    # A whole-vocabulary batch builds the implied table; ids two at a time take the per-id
    # product of the two halves (the vocabulary has more than 8 rows per id).
    torch.testing.assert_close(emb(ids), table[:vocab], rtol=1e-5, atol=1e-7)
    pairs = torch.cat([emb(ids[i:i + 2]) for i in range(0, vocab, 2)])
    torch.testing.assert_close(pairs, table[:vocab], rtol=1e-5, atol=1e-7)


def test_a_gpu_builds_the_table_where_it_is_no_larger_than_the_per_id_reads():
    # ml-25m's user table (420 x 400 rows of dim 32 = 8 x 4 halves), batch 4,096: the per-id
    # path reads (8 + 4) R values an id.
    rows, ids, dim = 420 * 400, 4096, 32
    for rank, on_gpu in [(39, False), (80, False), (161, True), (323, True)]:
        assert materialise(rows, ids, dim, 12 * rank, on_gpu=True) is on_gpu
        assert materialise(rows, ids, dim, 12 * rank, on_gpu=False) is False
    # Few rows per id: the table everywhere.
    assert materialise(8 * ids, ids, dim, 12, on_gpu=False)
    assert not materialise(8 * ids + 1, ids, dim, 12, on_gpu=False)


def test_one_id_by_hand():
    emb = make_embedding(24, 10**6, 4, "tt", 2, seed=1)  # cores (n1, 1, d1, R), (n2, R, d2, 1)
    (n1, d1), (n2, d2) = emb.layout
    i = 17
    i1, i2 = divmod(i, n2)
    g1, g2 = emb.cores[0][i1, 0], emb.cores[1][i2, :, :, 0]  # (d1, R), (R, d2)
    expected = torch.stack([g1[j1] @ g2[:, j2] for j1 in range(d1) for j2 in range(d2)])
    torch.testing.assert_close(emb(torch.tensor(i)), expected)


def test_factorisations():
    assert factor_vocab(1500, 4) == [7, 6, 6, 6]  # 6^4 = 1296 < 1500 <= 7 * 6^3
    assert factor_vocab(1, 3) == [1, 1, 1]
    assert factor_vocab(1000, 3) == [10, 10, 10]
    for vocab in range(1, 400):
        for c in (1, 2, 3, 4):
            f = factor_vocab(vocab, c)
            assert math.prod(f) >= vocab and max(f) - min(f) <= 1
    assert factor_dim(32, 4) == [4, 2, 2, 2]
    assert factor_dim(24, 2) == [6, 4]
    assert factor_dim(7, 3) == [7, 1, 1]
    assert factor_dim(30, 5) == [5, 3, 2, 1, 1]
    for dim in range(1, 70):
        assert math.prod(factor_dim(dim, 3)) == dim


def test_largest_cores_sit_at_the_ends():
    layout = core_layout(1000, 30, 4)  # n = 6, 6, 6, 5 and d = 5, 3, 2, 1
    assert [n * d for n, d in layout] == [30, 12, 5, 18]


def test_rank_is_the_largest_that_fits():
    layout = core_layout(1500, 32, 4)  # n_k d_k = 28, 12, 12, 12: 40 R + 24 R^2
    assert tt_params(layout, 3) == 40 * 3 + 24 * 9
    budget = tt_params(layout, 5)
    for asked, rank in [(budget, 5), (budget - 1, 4), (budget + 1, 5)]:
        emb = make_embedding(1500, asked, 32, "tt", 4, seed=0)
        assert emb.rank == rank and emb.num_parameters() == tt_params(layout, rank) <= asked
        assert emb.config()["rank"] == rank


def test_rank_stops_where_more_adds_nothing():
    emb = make_embedding(100, 10**7, 8, "tt", 2, seed=0)
    assert emb.rank == useful_rank(emb.layout) == min(n * d for n, d in emb.layout)


def test_too_small_budget_names_the_rank_one_size():
    minimum = tt_params(core_layout(1500, 32, 4), 1)
    with pytest.raises(BudgetTooSmall, match=f"use at least {minimum}"):
        make_embedding(1500, minimum - 1, 32, "tt", 4)
    assert make_embedding(1500, minimum, 32, "tt", 4).rank == 1


def test_init_gives_the_target_output_scale():
    emb = make_embedding(4096, 32 * 64, 32, "tt", 4, seed=0)
    std = float(emb(torch.arange(4096)).detach().std())
    assert 0.7 * emb.output_std < std < 1.3 * emb.output_std
