"""The configuration of one training run."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

MODELS = ["gmf", "dlrm"]
OPTIMIZERS = ["adamw", "sgd"]
# How matrix products multiply: fp32 (exact), tf32 (fp32 tensors, tensor-core matmuls with a
# 10-bit mantissa: DLRM's MLPs and interaction, and the tables' own products, dhe's, tt's and
# ldim's, for both models), bf16 (DLRM only: autocast, bf16 MLPs, fp32 tables and loss).
PRECISIONS = ["fp32", "tf32", "bf16"]
# The order of an epoch's training rows (order.py): one random permutation of all rows, or
# random blocks of contiguous rows (BLOCK_ROWS), each shuffled within, which streams from the
# memory-mapped cache with sequential reads (Criteo Terabyte).
SHUFFLES = ["rows", "blocks"]
# Fields with a fixed set of values; for those DLRM alone may set to every value, the values
# GMF may take.
CHOICES = {"optimizer": OPTIMIZERS, "precision": PRECISIONS, "shuffle": SHUFFLES}
_GMF_TAKES = {
    "precision": (("fp32", "tf32"), "is for DLRM's MLPs; GMF trains in fp32, or tf32 for its "
                  "tables' matrix products"),
    "shuffle": (("rows",), "is for DLRM's Criteo rows streamed from the cache; GMF data fits "
                "on the device (use rows)"),
}


def choice_problem(name: str, value: str, model: str) -> str | None:
    """Why `value` cannot be field `name` (a CHOICES field) of a `model` run; None if it can."""
    if value not in CHOICES[name]:
        return f"'{value}' is not one of {', '.join(CHOICES[name])}"
    gmf_values, why = _GMF_TAKES.get(name, (CHOICES[name], ""))
    if model != "dlrm" and value not in gmf_values:
        return f"'{value}' {why}"
    return None

# Fields added after the first results were written, with the value every earlier run had. A
# field at that value stays out of the run id, so the ids of existing rows (and resume) hold.
_ID_NEUTRAL = {"optimizer": "adamw", "eval_every": 0, "cluster_every": 0, "bottom_mlp": "",
               "top_mlp": "", "precision": "fp32", "shuffle": "rows"}


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
    # AdamW is the authors' GMF optimizer; DLRM trains with plain SGD (lr 0.1, no momentum).
    optimizer: str = "adamw"
    # Evaluate every this many steps as well as after each epoch (0: after each epoch only).
    eval_every: int = 0
    # Cluster every this many steps while step <= cluster_until * all steps (0: after epochs).
    cluster_every: int = 0
    # DLRM's MLPs in its own notation: bottom "13-512-256-64-16" (dense features in, dim out),
    # top "512-256-1" (the input size follows from the interaction). Empty for GMF.
    bottom_mlp: str = ""
    top_mlp: str = ""
    # Matmul precision (PRECISIONS): of DLRM's dense part, and under tf32 of every fp32
    # product of a step (cuBLAS's process-wide switch), dhe's, tt's and ldim's tables included,
    # GMF's too; tables' storage, their updates and k-means stay fp32.
    precision: str = "fp32"
    # How an epoch orders the training rows (SHUFFLES): "blocks" is for DLRM's streamed data.
    shuffle: str = "rows"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model '{self.model}'; choose from: {', '.join(MODELS)}")
        for name in ("dim", "n_chunks", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.budget < 0:
            raise ConfigError(f"budget must be non-negative, not {self.budget}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, not {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be a number >= 0, not {self.weight_decay}")
        if not 0 <= self.cluster_until <= 1:
            raise ConfigError(f"cluster_until must be in [0, 1], not {self.cluster_until}")
        if self.early_stop < 0:
            raise ConfigError(f"early_stop must be >= 0, not {self.early_stop}")
        for name in CHOICES:
            problem = choice_problem(name, getattr(self, name), self.model)
            if problem:
                raise ConfigError(f"{name} {problem}")
        for name in ("eval_every", "cluster_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 steps, not {getattr(self, name)}")

    @property
    def ppd(self) -> float:
        """Parameters per dimension: the budget in the paper's units."""
        return self.budget / self.dim

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_id(self) -> str:
        """A stable id from every field that can change the result."""
        fields = {k: v for k, v in self.to_dict().items()
                  if not (k in _ID_NEUTRAL and v == _ID_NEUTRAL[k])}
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def clusters_after(self, epoch: int) -> bool:
        """Whether the clustering schedule runs cluster() after this 1-based epoch."""
        return (not self.cluster_every and epoch < self.epochs
                and epoch <= self.cluster_until * self.epochs)

    def clusters_at_step(self, step: int, total_steps: int) -> bool:
        """Whether the step schedule (cluster_every > 0) runs cluster() after this step."""
        return (self.cluster_every > 0 and step % self.cluster_every == 0
                and step < total_steps and step <= self.cluster_until * total_steps)

    def cluster_rounds(self, steps_per_epoch: int) -> int:
        """How many times the schedule clusters over the whole run."""
        if not self.cluster_every:
            return sum(map(self.clusters_after, range(1, self.epochs + 1)))
        total = steps_per_epoch * self.epochs
        return sum(1 for s in range(self.cluster_every, total + 1, self.cluster_every)
                   if self.clusters_at_step(s, total))
