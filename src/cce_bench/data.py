"""In-memory datasets as the engine consumes them (the datasets layer builds these)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import IdError


@dataclass
class InteractionSplit:
    """(user, item, label) triples: int64 ids and float32 0/1 labels, all (N,)."""

    users: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.users.shape[0]

    @property
    def features(self) -> tuple[torch.Tensor, ...]:
        """The model's inputs, in the order its forward() takes them."""
        return self.users, self.items

    def to(self, device: torch.device | str) -> "InteractionSplit":
        return InteractionSplit(self.users.to(device, torch.int64), self.items.to(device, torch.int64),
                                self.labels.to(device, torch.float32))


@dataclass
class TabularSplit:
    """Dense and categorical features with labels, as tensors (DLRM's input): dense (N, F_d)
    float32, categorical (N, F) int32 ids (int32 halves the memory of Criteo on a GPU; the model
    widens a batch's ids), labels (N,) float32 0/1."""

    dense: torch.Tensor
    categorical: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def features(self) -> tuple[torch.Tensor, ...]:
        return self.dense, self.categorical

    def to(self, device: torch.device | str) -> "TabularSplit":
        return TabularSplit(self.dense.to(device, torch.float32),
                            self.categorical.to(device, torch.int32),
                            self.labels.to(device, torch.float32))

    @classmethod
    def from_arrays(cls, dense: np.ndarray, categorical: np.ndarray,
                    labels: np.ndarray) -> "TabularSplit":
        """From (memory-mapped, read-only) arrays, copied into memory once."""
        def copy(array: np.ndarray, dtype) -> torch.Tensor:
            return torch.from_numpy(np.array(array, dtype=dtype, copy=True))

        return cls(copy(dense, np.float32), copy(categorical, np.int32), copy(labels, np.float32))


@dataclass
class InteractionData:
    """A user-item click dataset for GMF."""

    name: str
    n_users: int
    n_items: int
    train: InteractionSplit
    val: InteractionSplit
    test: InteractionSplit | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        # Checked once here, so no id outside its table reaches a step: on CUDA the tables are
        # read without a bounds check per id (kernels/).
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if split is None or len(split) == 0:
                continue
            for column, size in (("users", self.n_users), ("items", self.n_items)):
                ids = getattr(split, column)
                low, high = int(ids.min()), int(ids.max())
                if low < 0 or high >= size:
                    raise IdError(f"{self.name}: {split_name} {column} run from {low} to {high}, "
                                  f"outside [0, {size}); rebuild the dataset (download --force)")


@dataclass
class CriteoSplit:
    """Rows of a Criteo-shaped split: views of the dataset's (memory-mapped) arrays."""

    dense: np.ndarray  # (N, 13) float32: log(1 + max(x, 0)), a missing value as 0
    categorical: np.ndarray  # (N, 26) int32: dense ids per feature, 0 for a missing value
    labels: np.ndarray  # (N,) uint8 0/1

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass
class CriteoData:
    """A click log with dense and categorical features (Criteo Kaggle / Terabyte, or the
    Criteo-shaped synthetic set), for DLRM. The arrays hold every row in file order;
    split_ranges says which rows each split takes (the last day: test, then validation)."""

    name: str
    dense: np.ndarray  # (N, 13) float32
    categorical: np.ndarray  # (N, 26) int32
    labels: np.ndarray  # (N,) uint8
    split_ranges: dict[str, tuple[int, int]]  # split -> [start, stop) rows
    vocab_sizes: list[int]  # ids per categorical feature
    meta: dict = field(default_factory=dict)

    @property
    def split_sizes(self) -> dict[str, int]:
        return {name: stop - start for name, (start, stop) in self.split_ranges.items()}

    def split(self, name: str) -> CriteoSplit:
        start, stop = self.split_ranges[name]
        return CriteoSplit(self.dense[start:stop], self.categorical[start:stop],
                           self.labels[start:stop])

    def tensors(self, name: str) -> TabularSplit:
        """A split as tensors in memory, for the engine."""
        part = self.split(name)
        return TabularSplit.from_arrays(part.dense, part.categorical, part.labels)

    @property
    def train(self) -> CriteoSplit:
        return self.split("train")

    @property
    def val(self) -> CriteoSplit:
        return self.split("val")

    @property
    def test(self) -> CriteoSplit:
        return self.split("test")
