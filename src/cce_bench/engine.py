"""Training and evaluation of one run: data on the device, no host sync inside an epoch.

An epoch is one pass over a fresh permutation of the training rows; the loss is accumulated on
the device and read once per epoch, after evaluation. Clustering runs between epochs on the
run's schedule, on every embedding that has a cluster() method.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import metrics
from .config import RunConfig
from .data import InteractionData, InteractionSplit
from .embeddings import make_embedding
from .embeddings.registry import get_method
from .errors import ConfigError
from .models import GMF
from .steps import PlainEpoch, StaticEpoch, reset_optimizer_state

EVAL_BATCH = 1 << 16


@dataclass
class EpochRecord:
    epoch: int
    step: int
    train_bce: float
    val_bce: float
    val_auc: float
    test_bce: float | None
    test_auc: float | None
    train_s: float
    cluster_s: float
    eval_s: float
    samples_per_s: float


@dataclass
class RunResult:
    status: str  # ok | diverged (errors are raised; the sweep layer records them)
    params: int  # trainable parameters of the largest embedding table
    buffer_bytes: int  # non-parameter bytes of all embedding tables
    total_bytes: int  # every trainable parameter (4 bytes each) plus the buffers
    epochs: list[EpochRecord] = field(default_factory=list)
    peak_mem_bytes: int | None = None
    device: str = "cpu"


EpochCallback = Callable[[RunConfig, EpochRecord], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(run: RunConfig, data: InteractionData) -> GMF:
    """The run's model with its embedding method (raises BudgetTooSmall for a tiny budget)."""
    opts = dict(run.method_opts)
    cls = get_method(run.method).cls
    if hasattr(cls, "cluster"):
        opts.setdefault("kmeans_backend", run.kmeans)
    if getattr(cls, "post_training", False):
        # A post-training method (pq) compresses on the schedule's last cluster() call: it trains
        # at full size while CCE clusters and fine-tunes compressed while CCE does.
        opts.setdefault("compress_round", sum(map(run.clusters_after, range(1, run.epochs + 1))))

    def factory(vocab: int) -> nn.Module:
        return make_embedding(vocab, run.budget, run.dim, run.method, run.n_chunks, **opts)

    return GMF(data.n_users, data.n_items, run.dim, factory)


def model_size(model: GMF) -> tuple[int, int, int]:
    """(params of the largest table, buffer bytes of all tables, total bytes)."""
    tables = model.embeddings()
    largest = max(t.num_parameters() for t in tables)
    buffers = sum(t.num_buffer_bytes() for t in tables)
    total = 4 * sum(p.numel() for p in model.parameters()) + buffers
    return largest, buffers, total


STEPPERS = ["auto", "plain", "static", "graph"]


def make_optimizer(model: nn.Module, run: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    # On CUDA the fused kernel updates every tensor in one launch, and capturable keeps its step
    # counter on the device so the update can live inside a CUDA graph.
    cuda = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay,
                             fused=cuda or None, capturable=cuda)


def make_stepper(stepper: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 split: InteractionSplit, batch_size: int, device: torch.device):
    """auto: a CUDA graph of static steps on CUDA, the plain loop elsewhere."""
    if stepper not in STEPPERS:
        raise ConfigError(f"unknown stepper '{stepper}'; choose from: {', '.join(STEPPERS)}")
    if stepper == "auto":
        stepper = "graph" if device.type == "cuda" else "plain"
    if stepper == "plain":
        return PlainEpoch(model, optimizer, split, batch_size)
    if stepper == "graph" and device.type != "cuda":
        raise ConfigError("the 'graph' stepper needs a CUDA device; use 'static' or 'plain'")
    return StaticEpoch(model, optimizer, split, batch_size, use_graph=stepper == "graph")


def train(run: RunConfig, data: InteractionData, device: str | torch.device = "auto",
          on_epoch: EpochCallback | None = None, stepper: str = "auto") -> RunResult:
    """Train and evaluate one run. `stepper` changes how steps are launched, never the result."""
    device = resolve_device(device)
    torch.manual_seed(run.seed)
    model = build_model(run, data).to(device)
    params, buffer_bytes, total_bytes = model_size(model)
    result = RunResult("ok", params, buffer_bytes, total_bytes, device=str(device))
    optimizer = make_optimizer(model, run, device)
    train_split, val_split = data.train.to(device), data.val.to(device)
    epochs = make_stepper(stepper, model, optimizer, train_split, run.batch_size, device)
    test_split = data.test.to(device) if data.test is not None else None
    shuffle = torch.Generator(device=device)
    shuffle.manual_seed(run.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    best_bce, best_auc, step = math.inf, -math.inf, 0
    for epoch in range(1, run.epochs + 1):
        start = _now(device)
        loss_sum = epochs.run(shuffle)
        train_s = _now(device) - start
        step += math.ceil(len(train_split) / run.batch_size)

        start = _now(device)
        val_bce, val_auc = evaluate(model, val_split)
        test_bce, test_auc = evaluate(model, test_split) if test_split is not None else (None, None)
        train_bce = float(loss_sum) / len(train_split)  # the epoch's one host sync
        eval_s = _now(device) - start

        cluster_s = 0.0
        finite = math.isfinite(train_bce) and math.isfinite(val_bce)
        if finite and run.clusters_after(epoch):
            start = _now(device)
            cluster_all(model, optimizer)
            epochs.invalidate()
            cluster_s = _now(device) - start

        record = EpochRecord(epoch, step, train_bce, val_bce, val_auc, test_bce, test_auc,
                             train_s, cluster_s, eval_s, len(train_split) / max(train_s, 1e-9))
        result.epochs.append(record)
        if on_epoch is not None:
            on_epoch(run, record)
        if not finite:
            result.status = "diverged"
            break
        if (_should_stop(run.early_stop, val_bce, val_auc, best_bce, best_auc)
                and not _awaiting_compression(model)):
            break
        best_bce, best_auc = min(best_bce, val_bce), max(best_auc, val_auc)

    # Sizes of the trained model: a post-training method (pq) shrinks when it compresses.
    result.params, result.buffer_bytes, result.total_bytes = model_size(model)
    if device.type == "cuda":
        result.peak_mem_bytes = torch.cuda.max_memory_allocated(device)
    return result


@torch.no_grad()
def predict(model: GMF, split: InteractionSplit) -> torch.Tensor:
    model.eval()
    return torch.cat([
        model(split.users[s:s + EVAL_BATCH], split.items[s:s + EVAL_BATCH])
        for s in range(0, len(split), EVAL_BATCH)
    ])


def evaluate(model: GMF, split: InteractionSplit) -> tuple[float, float]:
    """(BCE, AUC) of the model on a split, computed on the device, read once."""
    logits = predict(model, split)
    values = torch.stack([metrics.bce_with_logits(logits, split.labels).double(),
                          metrics.auc(logits, split.labels)]).tolist()
    return values[0], values[1]


def cluster_all(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """cluster() every embedding that has it; reset the optimizer state it asks to reset."""
    for module in model.modules():
        if hasattr(module, "cluster") and module is not model:
            reset_optimizer_state(optimizer, module.cluster())


def _awaiting_compression(model: nn.Module) -> bool:
    """Whether a post-training method has yet to compress (the run must not stop before)."""
    return any(getattr(m, "post_training", False) and not m.compressed for m in model.modules())


def _should_stop(tolerance: float, bce: float, auc: float, best_bce: float, best_auc: float) -> bool:
    if tolerance <= 0 or not math.isfinite(best_bce):
        return False
    return bce > best_bce * (1 + tolerance) and auc < best_auc * (1 - tolerance)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
