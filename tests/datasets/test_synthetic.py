"""The synthetic GMF generator: splits, counts, labels, truth-model scores, caching."""

from __future__ import annotations

import numpy as np
import pytest

from cce_bench.datasets import load_dataset
from cce_bench.errors import ConfigError
from cce_bench.datasets.synthetic import SyntheticSpec


def test_splits_and_counts():
    data = load_dataset("syn-50-1010")
    assert data.n_users == data.n_items == 50
    assert len(data.train) == 1010 and len(data.val) == 100
    per_user = np.bincount(data.train.users.numpy(), minlength=50)
    assert per_user.tolist() == [21] * 10 + [20] * 40  # N // V each, the first N % V one more
    assert np.bincount(data.val.users.numpy(), minlength=50).tolist() == [2] * 50
    assert set(data.train.labels.unique().tolist()) <= {0.0, 1.0}


def test_no_pair_is_in_both_splits_and_none_repeats():
    data = load_dataset("syn-50-1010")
    train = set(zip(data.train.users.tolist(), data.train.items.tolist()))
    val = set(zip(data.val.users.tolist(), data.val.items.tolist()))
    assert len(train) == len(data.train) and len(val) == len(data.val)
    assert not train & val


def test_truth_model_scores_are_stored():
    meta = load_dataset("syn-50-1010").meta
    assert 0.5 < meta["bayes_val_auc"] <= 1.0
    assert 0.0 < meta["bayes_val_bce"] < 0.7
    assert 0.0 < meta["label_rate"] < 1.0


def test_generation_is_seeded_and_cached(data_cache):
    a = load_dataset("syn-50-1010")
    files = sorted(data_cache.rglob("train_items.npy"))
    stamp = files[0].stat().st_mtime_ns
    b = load_dataset("syn-50-1010")
    assert files[0].stat().st_mtime_ns == stamp  # not generated again
    assert (a.train.items == b.train.items).all()


def test_impossible_sizes_are_refused():
    with pytest.raises(ConfigError, match="exceed the 10 items"):
        SyntheticSpec.parse("syn-10-100")
    with pytest.raises(ConfigError, match="not a synthetic dataset name"):
        SyntheticSpec.parse("syn-10")


def test_gumbel_top_k_is_a_draw_without_replacement_from_the_softmax():
    """Inclusion frequencies of 3 of 5 items match sequential sampling without replacement
    from softmax(u . v / sqrt(8)), computed exactly over every ordered triple."""
    import itertools
    import math

    import torch

    from cce_bench.datasets.synthetic import LATENT_DIM, _draw_items

    gen = torch.Generator().manual_seed(0)
    items = torch.randn(5, LATENT_DIM, generator=gen)
    user = torch.randn(1, LATENT_DIM, generator=gen)
    drawn = _draw_items(user.expand(40_000, -1), items, 3, gen)  # (40000, 3)
    observed = np.bincount(drawn.reshape(-1).numpy(), minlength=5) / 40_000
    p = torch.softmax((user @ items.T).reshape(-1) / math.sqrt(LATENT_DIM), 0).double().numpy()
    exact = np.zeros(5)
    for a, b, c in itertools.permutations(range(5), 3):
        chance = p[a] * p[b] / (1 - p[a]) * p[c] / (1 - p[a] - p[b])
        exact[[a, b, c]] += chance
    np.testing.assert_allclose(observed, exact, atol=0.01)


def test_a_users_items_come_from_its_own_draw_only():
    """Users with fewer interactions than the widest take the first of their own draw, not a
    subset of the wider draw."""
    import torch

    from cce_bench.datasets.synthetic import _assign

    drawn = torch.arange(12).repeat(500, 1)  # (500, 12): columns in draw order
    per_user = torch.tensor([10, 3] * 250)
    shuffled, keep = _assign(drawn, per_user, torch.Generator().manual_seed(1))
    for row in (0, 1):
        k = int(per_user[row]) + 2
        mine = set(shuffled[row, :2].tolist()) | set(shuffled[row, 2:][keep[row]].tolist())
        assert mine == set(range(k))
    assert keep.sum(1).tolist() == per_user.tolist()
    # the validation pair is any two of the user's own draw, uniformly
    firsts = np.bincount(shuffled[1::2, 0].numpy(), minlength=12)
    assert firsts[5:].sum() == 0 and firsts[:5].min() > 25  # 50 each expected


def test_generated_on_is_recorded():
    assert load_dataset("syn-50-1010").meta["generated_on"] == "cpu"
