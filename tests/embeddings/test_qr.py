"""Quotient-remainder trick: tables indexed by i // m and i % m, sized to the budget."""

from __future__ import annotations

import math

import pytest
import torch

from cce_bench import BudgetTooSmall, ConfigError, make_embedding
from cce_bench.embeddings.qr import choose_m, minimum_rows, total_rows


def test_indices_are_quotient_and_remainder_and_identify_every_id():
    emb = make_embedding(1000, 100 * 8, 8, "qr")
    ids = torch.arange(1000)
    q, r = emb.indices(ids)
    assert torch.equal(q * emb.m + r, ids)
    assert int(q.max()) == emb.quotients - 1 and int(r.max()) == emb.m - 1
    assert len(set(zip(q.tolist(), r.tolist()))) == 1000


@pytest.mark.parametrize("combine", ["mult", "sum", "concat"])
def test_tables_are_combined_as_asked(combine):
    emb = make_embedding(100, 400, 8, "qr", combine=combine, seed=1)
    ids = torch.tensor([0, 42, 99])
    a, b = emb.quotient_table[ids // emb.m], emb.remainder_table[ids % emb.m]
    expected = {"mult": a * b, "sum": a + b, "concat": torch.cat([a, b], -1)}[combine]
    torch.testing.assert_close(emb(ids), expected)
    assert emb(ids).shape == (3, 8)


def brute_force(vocab: int, max_rows: int) -> int | None:
    fitting = [(total_rows(vocab, m), m) for m in range(1, vocab + 1)
               if total_rows(vocab, m) <= max_rows]
    return max(fitting)[1] if fitting else None


@pytest.mark.parametrize("vocab", [1, 2, 3, 8, 15, 24, 99, 100, 101, 1000])
def test_m_uses_the_most_of_the_budget(vocab):
    assert minimum_rows(vocab) == min(total_rows(vocab, m) for m in range(1, vocab + 1))
    assert minimum_rows(vocab) == math.ceil(2 * math.sqrt(vocab))
    for max_rows in range(minimum_rows(vocab) - 1, vocab + 3):
        assert choose_m(vocab, max_rows) == brute_force(vocab, max_rows)


@pytest.mark.parametrize("budget", [64 * 16, 100 * 16 + 15, 300 * 16])
def test_parameter_count_is_exact(budget):
    emb = make_embedding(1000, budget, 16, "qr")
    assert emb.num_parameters() == (emb.m + math.ceil(1000 / emb.m)) * 16 <= budget
    assert emb.m == brute_force(1000, budget // 16)


def test_a_large_budget_gives_a_full_remainder_table():
    emb = make_embedding(50, 10**6, 8, "qr")
    assert (emb.m, emb.quotients) == (50, 1)


def test_smallest_budget():
    minimum = minimum_rows(1000) * 16  # 64 rows at vocab 1000
    with pytest.raises(BudgetTooSmall, match=f"use at least {minimum}$"):
        make_embedding(1000, minimum - 1, 16, "qr")
    assert make_embedding(1000, minimum, 16, "qr").num_parameters() == minimum
    concat = make_embedding(1000, minimum // 2, 16, "qr", combine="concat")
    assert concat.num_parameters() == minimum // 2


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="combine must be one of mult, sum, concat, not 'max'"):
        make_embedding(100, 400, 8, "qr", combine="max")
    with pytest.raises(ConfigError, match="dim 7 is odd"):
        make_embedding(100, 400, 7, "qr", combine="concat")
