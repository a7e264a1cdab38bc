"""The configuration of one training run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

MODELS = ["gmf"]


@dataclass
class RunConfig:
    dataset: str
    method: str
    budget: int  # parameters asked per embedding table (the sweep's ppd x dim)
    model: str = "gmf"
    dim: int = 32
    n_chunks: int = 4
    seed: int = 0
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 0.01  # torch's AdamW default, as in the authors' scripts
    # Cluster after every epoch while epoch <= cluster_until * epochs (never after the last):
    # the authors' schedule, which leaves the last quarter of training to fine-tune.
    cluster_until: float = 0.75
    # Stop when validation BCE and AUC both get worse than the best so far by this fraction;
    # 0 disables early stopping.
    early_stop: float = 0.01
    kmeans: str = "auto"
    method_opts: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model '{self.model}'; choose from: {', '.join(MODELS)}")
        for name in ("dim", "n_chunks", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.budget < 0:
            raise ConfigError(f"budget must be non-negative, not {self.budget}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, not {self.lr}")
        if not 0 <= self.cluster_until <= 1:
            raise ConfigError(f"cluster_until must be in [0, 1], not {self.cluster_until}")
        if self.early_stop < 0:
            raise ConfigError(f"early_stop must be >= 0, not {self.early_stop}")

    @property
    def ppd(self) -> float:
        """Parameters per dimension: the budget in the paper's units."""
        return self.budget / self.dim

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_id(self) -> str:
        """A stable id from every field that can change the result."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def clusters_after(self, epoch: int) -> bool:
        """Whether the clustering schedule runs cluster() after this 1-based epoch."""
        return epoch < self.epochs and epoch <= self.cluster_until * self.epochs
