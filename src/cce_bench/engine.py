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
from .steps import PlainEpoch, StaticEpoch, capture_steps, reset_optimizer_state

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
    return train_many([run], data, device, on_epoch, stepper)[0]


def train_many(runs: list[RunConfig], data: InteractionData, device: str | torch.device = "auto",
               on_epoch: EpochCallback | None = None, stepper: str = "auto") -> list[RunResult]:
    """Train several runs of one dataset and batch size in lockstep, each as if alone.

    On CUDA one step of every run is captured in one graph, each run on its own branch, so
    the small kernels of different runs execute side by side and one launch advances them
    all; the numbers are those of training each run alone.
    An epoch's train_s is the group's wall time for that epoch.
    """
    device = resolve_device(device)
    if len({(r.dataset, r.batch_size) for r in runs}) > 1:
        raise ConfigError("runs trained together need the same dataset and batch size")
    splits = [data.train.to(device), data.val.to(device),
              data.test.to(device) if data.test is not None else None]
    # Several runs on CUDA: their steps are captured together in one graph (see capture_steps).
    grouped = device.type == "cuda" and len(runs) > 1 and stepper in ("auto", "graph")
    states = [_RunState(run, data, splits, device, "static" if grouped else stepper)
              for run in runs]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    active, graph, captured = list(states), None, []
    while active:
        start = device_clock(device)
        for state in active:
            state.epochs.prepare(state.shuffle)
        if grouped and (captured != active or any(s.epochs.moved() for s in active)):
            graph, captured = capture_steps([s.epochs for s in active]), list(active)
        for _ in range(active[0].epochs.steps):
            if graph is not None:
                graph.replay()
            else:
                for state in active:
                    state.epochs.step()
        train_s = device_clock(device) - start
        for state in active:
            state.end_epoch(train_s, on_epoch)
        active = [state for state in active if not state.done]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    for state in states:
        state.result.peak_mem_bytes = peak
        # Sizes of the trained model: a post-training method (pq) shrinks when it compresses.
        state.result.params, state.result.buffer_bytes, state.result.total_bytes = \
            model_size(state.model)
    return [state.result for state in states]


class _RunState:
    """One run's model, optimizer, stepper and progress through its epochs."""

    def __init__(self, run: RunConfig, data: InteractionData, splits: list, device: torch.device,
                 stepper: str):
        self.run, self.device = run, device
        self.train_split, self.val_split, self.test_split = splits
        torch.manual_seed(run.seed)
        self.model = build_model(run, data).to(device)
        params, buffer_bytes, total_bytes = model_size(self.model)
        self.result = RunResult("ok", params, buffer_bytes, total_bytes, device=str(device))
        self.optimizer = make_optimizer(self.model, run, device)
        self.epochs = make_stepper(stepper, self.model, self.optimizer, self.train_split,
                                   run.batch_size, device)
        self.shuffle = torch.Generator(device=device)
        self.shuffle.manual_seed(run.seed)
        self.epoch, self.step, self.done = 0, 0, False
        self.best_bce, self.best_auc = math.inf, -math.inf

    def end_epoch(self, train_s: float, on_epoch: EpochCallback | None) -> None:
        """Evaluate, record, cluster on schedule, and decide whether to stop."""
        run, device = self.run, self.device
        self.epoch += 1
        self.step += self.epochs.steps
        start = device_clock(device)
        val_bce, val_auc = evaluate(self.model, self.val_split)
        test_bce, test_auc = (evaluate(self.model, self.test_split) if self.test_split is not None
                              else (None, None))
        train_bce = float(self.epochs.loss_total()) / len(self.train_split)  # one sync an epoch
        eval_s = device_clock(device) - start

        cluster_s = 0.0
        finite = math.isfinite(train_bce) and math.isfinite(val_bce)
        awaiting = _awaiting_compression(self.model)
        if finite and run.clusters_after(self.epoch):
            start = device_clock(device)
            cluster_all(self.model, self.optimizer)
            self.epochs.invalidate()
            cluster_s = device_clock(device) - start

        record = EpochRecord(self.epoch, self.step, train_bce, val_bce, val_auc, test_bce,
                             test_auc, train_s, cluster_s, eval_s,
                             len(self.train_split) / max(train_s, 1e-9))
        self.result.epochs.append(record)
        if on_epoch is not None:
            on_epoch(run, record)
        if not finite:
            self.result.status, self.done = "diverged", True
        elif (not awaiting
              and _should_stop(run.early_stop, val_bce, val_auc, self.best_bce, self.best_auc)):
            self.done = True
        else:
            self.best_bce, self.best_auc = min(self.best_bce, val_bce), max(self.best_auc, val_auc)
        if awaiting and not _awaiting_compression(self.model):
            # A post-training method (pq) just compressed: early stopping compares the
            # compressed model with itself, never with the full table it was.
            self.best_bce, self.best_auc = math.inf, -math.inf
        self.done = self.done or self.epoch >= run.epochs


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


def device_clock(device: torch.device) -> float:
    """Seconds on the host clock once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
