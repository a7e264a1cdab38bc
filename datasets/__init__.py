"""Datasets: the catalog, downloads, preprocessing, the data cache, and loading.

Where data enters cce-bench. `load_dataset(name)` returns the InteractionData GMF trains on (a
MovieLens release or synthetic GMF data); `load_criteo(name)` returns the CriteoData DLRM trains
on. Generated data is built on first use; downloaded data must be fetched first with
`prepare(name)` (`cce-bench download NAME`), or loading is asked to with download=True.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cce_bench.errors import ConfigError, DatasetError

from . import cache
from .catalog import DEFAULT_DATASET, DatasetInfo, SourceFile, catalog, info
from .criteo import N_CAT, N_DENSE
from .download import Reporter, RichReporter, SilentReporter
from .fetch import entry_path, prepare, require, status

if TYPE_CHECKING:  # torch loads with the data, not with the catalog (`cce-bench datasets`)
    from cce_bench.data import CriteoData, InteractionData, InteractionSplit

CRITEO_KINDS = ("criteo", "criteo-synthetic")


def load_dataset(name: str = DEFAULT_DATASET, download: bool = False,
                 reporter: Reporter | None = None, device: str = "cpu") -> InteractionData:
    """The user-item interactions of name, from the cache.

    download: fetch and preprocess a missing downloadable dataset (else DatasetError says the
    command). device: where synthetic data is generated the first time ("cpu", "cuda").
    """
    from cce_bench.data import InteractionData

    folder = require_interactions(name, download, reporter, device)
    meta = cache.read_meta(folder)
    return InteractionData(name, meta["n_users"], meta["n_items"],
                           train=_split(folder, "train"), val=_split(folder, "val"), meta=meta)


def require_interactions(name: str, download: bool = False, reporter: Reporter | None = None,
                         device: str = "cpu"):
    """The ready cache folder of an interaction dataset (what load_dataset reads): a Criteo
    name raises ConfigError, a missing download DatasetError with the command to run."""
    if info(name).kind in CRITEO_KINDS:
        raise ConfigError(f"{name} is a Criteo dataset (dense and categorical features, for "
                          "DLRM); GMF needs an interaction dataset: a MovieLens release "
                          "(ml-1m, ...) or synthetic data (syn-<vocab>-<interactions>)")
    return require(name, download=download, reporter=reporter, device=device)


def load_criteo(name: str = "criteo-synthetic", download: bool = False,
                reporter: Reporter | None = None, **options) -> CriteoData:
    """The Criteo-shaped click log of name, memory-mapped from the cache.

    options: preprocessing options of the entry (threshold, max_ind_range), defaults from the
    catalog; each set of options is its own cache entry.
    """
    from cce_bench.data import CriteoData

    if info(name).kind not in CRITEO_KINDS:
        raise ConfigError(f"{name} is not a Criteo dataset; choose criteo-kaggle, "
                          "criteo-terabyte or criteo-synthetic[-<rows>]")
    folder = require(name, download=download, reporter=reporter, **options)
    meta = cache.read_meta(folder)
    ranges = {split: tuple(bounds) for split, bounds in meta["split_ranges"].items()}
    arrays = {key: cache.load_array(folder, key) for key in ("dense", "categorical", "labels")}
    rows = max(stop for _, stop in ranges.values())
    shapes = {"dense": (rows, N_DENSE), "categorical": (rows, N_CAT), "labels": (rows,)}
    for key, array in arrays.items():
        if array.shape != shapes[key]:
            raise DatasetError(f"{folder / key}.npy holds {array.shape}, not the {shapes[key]} "
                               f"its meta.json says; rebuild the dataset with `cce-bench "
                               f"download {name} --force`")
    return CriteoData(name, arrays["dense"], arrays["categorical"], arrays["labels"], ranges,
                      list(meta["vocab_sizes"]), meta)


def load_training_data(name: str, model: str = "gmf", download: bool = False,
                       reporter: Reporter | None = None) -> InteractionData | CriteoData:
    """What a model trains on: interactions for GMF, a Criteo-shaped log for DLRM."""
    if model == "dlrm":
        return load_criteo(name, download, reporter)
    return load_dataset(name, download, reporter)


def require_training_data(name: str, model: str = "gmf", download: bool = False,
                          reporter: Reporter | None = None):
    """The ready cache folder of what a model trains on (see load_training_data): a dataset
    of the wrong kind raises ConfigError, a missing download DatasetError with the command."""
    if model == "dlrm":
        if info(name).kind not in CRITEO_KINDS:
            raise ConfigError(f"{name} is not a Criteo dataset; DLRM needs criteo-kaggle, "
                              "criteo-terabyte or criteo-synthetic[-<rows>][-cap<ids>]")
        return require(name, download=download, reporter=reporter)
    return require_interactions(name, download, reporter)


def _split(folder, split: str) -> InteractionSplit:
    import torch

    from cce_bench.data import InteractionSplit

    def column(key: str) -> torch.Tensor:
        return torch.from_numpy(np.array(cache.load_array(folder, f"{split}_{key}")))

    return InteractionSplit(column("users").long(), column("items").long(), column("labels").float())


__all__ = ["DEFAULT_DATASET", "DatasetInfo", "Reporter", "RichReporter", "SilentReporter",
           "SourceFile", "catalog", "entry_path", "info", "load_criteo", "load_dataset",
           "load_training_data", "prepare", "require", "require_interactions",
           "require_training_data", "status"]
