"""Datasets: the catalog, the data cache, generation and loading into the engine's format.

Where data enters cce-bench: `load_dataset(name)` returns an InteractionData, building the cache
entry first when the dataset is generated (synthetic) and it is not there yet.
"""

from __future__ import annotations

import numpy as np
import torch

from cce_bench.data import InteractionData, InteractionSplit

from . import cache, synthetic
from .catalog import DEFAULT_DATASET, DatasetInfo, catalog, info, status


def load_dataset(name: str = DEFAULT_DATASET) -> InteractionData:
    info(name)  # unknown names fail here, listing the known ones
    spec = synthetic.SyntheticSpec.parse(name)
    folder = cache.build_entry(name, synthetic.VERSION, {"seed": spec.seed},
                               lambda tmp: synthetic.generate(spec, tmp))
    meta = cache.read_meta(folder)
    return InteractionData(name, meta["n_users"], meta["n_items"],
                           train=_split(folder, "train"), val=_split(folder, "val"), meta=meta)


def _split(folder, split: str) -> InteractionSplit:
    def column(key: str) -> torch.Tensor:
        return torch.from_numpy(np.array(cache.load_array(folder, f"{split}_{key}")))

    return InteractionSplit(column("users").long(), column("items").long(), column("labels").float())


__all__ = ["DEFAULT_DATASET", "DatasetInfo", "catalog", "info", "load_dataset", "status"]
