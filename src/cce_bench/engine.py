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
import torch.nn.functional as F
from torch import nn

from . import metrics
from .config import RunConfig
from .data import InteractionData, InteractionSplit
from .embeddings import make_embedding
from .embeddings.registry import get_method
from .models import GMF

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
    if hasattr(get_method(run.method).cls, "cluster"):
        opts.setdefault("kmeans_backend", run.kmeans)

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


def train(run: RunConfig, data: InteractionData, device: str | torch.device = "auto",
          on_epoch: EpochCallback | None = None) -> RunResult:
    device = resolve_device(device)
    torch.manual_seed(run.seed)
    model = build_model(run, data).to(device)
    params, buffer_bytes, total_bytes = model_size(model)
    result = RunResult("ok", params, buffer_bytes, total_bytes, device=str(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    train_split, val_split = data.train.to(device), data.val.to(device)
    test_split = data.test.to(device) if data.test is not None else None
    shuffle = torch.Generator(device=device)
    shuffle.manual_seed(run.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    best_bce, best_auc, step = math.inf, -math.inf, 0
    for epoch in range(1, run.epochs + 1):
        start = _now(device)
        loss_sum = train_epoch(model, optimizer, train_split, run.batch_size, shuffle)
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
            cluster_s = _now(device) - start

        record = EpochRecord(epoch, step, train_bce, val_bce, val_auc, test_bce, test_auc,
                             train_s, cluster_s, eval_s, len(train_split) / max(train_s, 1e-9))
        result.epochs.append(record)
        if on_epoch is not None:
            on_epoch(run, record)
        if not finite:
            result.status = "diverged"
            break
        if _should_stop(run.early_stop, val_bce, val_auc, best_bce, best_auc):
            break
        best_bce, best_auc = min(best_bce, val_bce), max(best_auc, val_auc)

    if device.type == "cuda":
        result.peak_mem_bytes = torch.cuda.max_memory_allocated(device)
    return result


def train_epoch(model: GMF, optimizer: torch.optim.Optimizer, split: InteractionSplit,
                batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """One pass over shuffled batches; returns the summed loss as a device tensor."""
    model.train()
    n = len(split)
    order = torch.randperm(n, generator=generator, device=split.users.device)
    loss_sum = torch.zeros((), device=split.users.device)
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        logits = model(split.users[rows], split.items[rows])
        loss = F.binary_cross_entropy_with_logits(logits, split.labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * rows.shape[0]
    return loss_sum


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
            for param in module.cluster():
                optimizer.state.pop(param, None)


def _should_stop(tolerance: float, bce: float, auc: float, best_bce: float, best_auc: float) -> bool:
    if tolerance <= 0 or not math.isfinite(best_bce):
        return False
    return bce > best_bce * (1 + tolerance) and auc < best_auc * (1 - tolerance)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
