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
