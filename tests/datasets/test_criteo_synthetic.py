"""criteo-synthetic: Criteo's shape, heavy-tailed ids, ~25% positives, seeded, Bayes scores."""

from __future__ import annotations

import numpy as np
import pytest

from cce_bench.datasets import info, load_criteo, status
from cce_bench.datasets.catalog import CRITEO_KAGGLE_CARDINALITIES
from cce_bench.errors import ConfigError, UnknownName

NAME = "criteo-synthetic-30000"


def test_shape_splits_and_label_rate():
    data = load_criteo(NAME)
    assert data.dense.shape == (30_000, 13) and data.dense.dtype == np.float32
    assert data.categorical.shape == (30_000, 26) and data.categorical.dtype == np.int32
    assert data.vocab_sizes == list(CRITEO_KAGGLE_CARDINALITIES)
    assert (data.categorical < np.array(data.vocab_sizes)).all() and (data.categorical >= 0).all()
    # 7 days of 4,285 (the first five 4,286): 6 train, the last one test then validation
    assert data.split_sizes == {"train": 25_715, "test": 2_143, "val": 2_142}
    assert 0.22 < data.meta["label_rate"] < 0.28
    assert 0.7 < data.meta["bayes_val_auc"] < 0.95 and 0.2 < data.meta["bayes_val_bce"] < 0.6
    assert (data.dense >= 0).all() and (data.dense == 0).mean() > 0.1  # log(1+x), missing as 0


def test_ids_are_heavy_tailed():
    data = load_criteo(NAME)
    for j in (2, 11):  # C3, C12: millions of possible ids
        _, counts = np.unique(data.categorical[:, j], return_counts=True)
        counts = np.sort(counts)[::-1]
        assert counts[:10].sum() > 0.15 * len(data.labels)  # a few ids take many rows
        assert (counts == 1).sum() > 0.5 * len(counts)  # most seen ids are rare


def test_seeded_cached_and_capped(data_cache):
    a = load_criteo(NAME)
    b = load_criteo(NAME)
    assert (a.categorical == b.categorical).all() and (a.labels == b.labels).all()
    assert status(NAME) == "ready"
    capped = load_criteo("criteo-synthetic-2000-cap50")
    assert max(capped.vocab_sizes) == 50 and capped.categorical.max() < 50


def test_names_and_options():
    assert info("criteo-synthetic").rows == 1_000_000
    with pytest.raises(UnknownName):
        info("criteo-synthetic-x")
    with pytest.raises(ConfigError, match="at least 14 rows"):
        load_criteo("criteo-synthetic-10")
    with pytest.raises(ConfigError, match="takes no preprocessing options"):
        load_criteo(NAME, threshold=2)


@pytest.mark.parametrize("damage", ["truncated", "missing", "reshaped"])
def test_a_damaged_criteo_entry_is_named_and_rebuilt(tmp_path, monkeypatch, damage):
    import numpy as np

    from cce_bench.datasets import cache, entry_path, load_criteo
    from cce_bench.errors import DatasetError

    monkeypatch.setenv("CCE_BENCH_DATA", str(tmp_path))  # not the session's shared cache
    whole = np.array(load_criteo("criteo-synthetic-700").categorical)
    folder = entry_path("criteo-synthetic-700")
    array = folder / "categorical.npy"
    if damage == "truncated":
        array.write_bytes(array.read_bytes()[:-500])
        why, error = f"{array} is damaged", f"{array} is damaged ("
    elif damage == "missing":
        array.unlink()
        why = error = f"{array} is missing"
        error = f"{array} is damaged (missing)"
    else:
        np.save(array, np.zeros((699, 26), np.int32))
        why = None  # a whole array of another shape: only loading can tell
        error = f"{array} holds (699, 26), not the (700, 26) its meta.json says"
    if why is not None:
        assert status("criteo-synthetic-700") == f"damaged: {why}"
        with pytest.raises(DatasetError) as err:
            cache.load_array(folder, "categorical")
        assert str(err.value).startswith(error)
        assert str(err.value).endswith("rebuild the dataset with `cce-bench download "
                                       "criteo-synthetic-700 --force`")
        # Generated data is rebuilt on its next use, the same rows as before.
        np.testing.assert_array_equal(load_criteo("criteo-synthetic-700").categorical, whole)
    else:
        with pytest.raises(DatasetError) as err:
            load_criteo("criteo-synthetic-700")
        assert str(err.value).startswith(error)
