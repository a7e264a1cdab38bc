"""Device metrics against slow, obviously correct references."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cce_bench import metrics


def exact_auc(scores: list[float], labels: list[int]) -> float:
    """Count every (positive, negative) pair: 1 if ordered right, 1/2 if tied."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.tuples(st.integers(-5, 5), st.integers(0, 1)), min_size=2, max_size=60))
def test_auc_equals_the_exact_pair_count_with_ties(data):
    scores = [float(s) / 2 for s, _ in data]  # few distinct values: many ties
    labels = [y for _, y in data]
    got = metrics.auc(torch.tensor(scores), torch.tensor(labels))
    if 0 < sum(labels) < len(labels):
        assert math.isclose(float(got), exact_auc(scores, labels), abs_tol=1e-12)
    else:
        assert math.isnan(float(got))  # AUC is undefined with one class


def test_auc_on_continuous_random_scores():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(500, generator=gen)
    labels = (torch.rand(500, generator=gen) < torch.sigmoid(2 * scores)).long()
    assert math.isclose(float(metrics.auc(scores, labels)),
                        exact_auc(scores.tolist(), labels.tolist()), abs_tol=1e-12)


def test_auc_extremes_and_float_labels():
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert float(metrics.auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels)) == 1.0
    assert float(metrics.auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels)) == 0.0
    assert float(metrics.auc(torch.ones(4), labels)) == 0.5


def test_bce_matches_the_formula():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    labels = torch.tensor([0.0, 1.0, 1.0])
    p = torch.sigmoid(logits.double())
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert math.isclose(float(metrics.bce_with_logits(logits, labels)), float(expected),
                        rel_tol=1e-6)
    assert math.isclose(float(metrics.bce_of_probabilities(p, labels)), float(expected),
                        rel_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.lists(st.integers(-4, 4), min_size=12, max_size=12), min_size=1,
                     max_size=5),
       labels=st.lists(st.integers(0, 1), min_size=12, max_size=12))
def test_auc_of_rows_is_each_rows_auc(data, labels):
    scores = torch.tensor(data, dtype=torch.float32) / 2  # few distinct values: many ties
    y = torch.tensor(labels)
    got = metrics.auc_rows(scores, y)
    for row, value in zip(scores, got):
        expected = float(metrics.auc(row, y))
        assert (math.isnan(expected) and math.isnan(float(value))) or \
            math.isclose(float(value), expected, abs_tol=1e-12)


def test_bce_of_rows_is_each_rows_bce():
    gen = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(3, 200, generator=gen), (torch.rand(200, generator=gen) < 0.3)
    got = metrics.bce_rows(logits, labels)
    for row, value in zip(logits, got):
        assert math.isclose(float(value), float(metrics.bce_with_logits(row, labels)),
                            rel_tol=1e-6)
