"""In-memory datasets as the engine consumes them (the datasets layer builds these)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class InteractionSplit:
    """(user, item, label) triples: int64 ids and float32 0/1 labels, all (N,)."""

    users: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.users.shape[0]

    def to(self, device: torch.device | str) -> "InteractionSplit":
        return InteractionSplit(self.users.to(device, torch.int64), self.items.to(device, torch.int64),
                                self.labels.to(device, torch.float32))


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
