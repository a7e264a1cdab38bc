"""Training and evaluation of one run: data on the device, no host sync between evaluations.

An epoch is one pass over a fresh permutation of the training rows; the loss is accumulated on
the device and read once per evaluation. A run evaluates after each epoch and, where it asks,
every `eval_every` steps (DLRM on Criteo: every 50,000 batches, as the paper); it clusters after
epochs or every `cluster_every` steps, on every embedding that has a cluster() method. GMF and
DLRM go through this one loop: a split's `features` are the model's inputs.

A run that ran every epoch it was given (not stopped early, not diverged) and whose last epoch
still improved its best validation BCE or AUC by more than the early-stop tolerance is marked
`still_improving` (see `improved_in_last_epoch`): its score says more about its training length
than about its table's capacity.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from . import metrics
from .config import RunConfig
from .data import CriteoData, InteractionData
from . import distributed
from .embeddings.sparse_update import enable_sparse_sgd
from .errors import ConfigError
from .models import build_model, model_size
from .models.dlrm import dense_precision
from .optim import AdamW
from .stacking import (StackedEpoch, StackMember, awaiting_compression, find_twins,
                       plan_stacks)
from .steps import PlainEpoch, Split, StaticEpoch, capture_steps, reset_optimizer_state
from .streaming import HostSplit, StreamingEpoch, fits_on_device

EVAL_BATCH = 1 << 16
# A BCE this large means the model gives the true label e^-10 of probability on average: a
# start from ln 2 never gets there by learning, only by exploding (lr 1e6 reached 2e28 with
# status ok before this); such a run is `diverged`.
DIVERGED_BCE = 10.0
# The tolerance `still_improving` uses when a run's early stopping is off (early_stop 0): a
# tolerance of 0 would call a plateau's noise an improvement. RunConfig's own default.
IMPROVING_TOLERANCE = next(f.default for f in fields(RunConfig) if f.name == "early_stop")

Data = InteractionData | CriteoData


@dataclass
class EpochRecord:
    """One evaluation point: `epoch` is the epoch it falls in (1-based), `step` the steps so far."""

    epoch: int
    step: int
    train_bce: float  # over the rows trained since the previous record
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
    epochs: list[EpochRecord] = field(default_factory=list)  # one per evaluation point
    peak_mem_bytes: int | None = None
    device: str = "cpu"
    table_params: int = 0  # trainable parameters of all embedding tables together
    # Ran every epoch (not stopped early, not diverged) and its last epoch still improved its
    # best val BCE or AUC by more than the early-stop tolerance (improved_in_last_epoch).
    still_improving: bool = False

    def set_sizes(self, model: nn.Module) -> None:
        self.params, self.table_params, self.buffer_bytes, self.total_bytes = model_size(model)


EpochCallback = Callable[[RunConfig, EpochRecord], None]
# Told before a run's cluster() starts: on a CPU a 1M-id vocabulary takes a minute or more.
# (run, the epoch its step falls in, the step), as an EpochRecord counts them.
ClusterCallback = Callable[[RunConfig, int, int], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


STEPPERS = ["auto", "plain", "static", "graph"]
INPUTS = ["auto", "device", "stream"]


def fuse_sparse_updates(model: nn.Module, run: RunConfig) -> None:
    """Under plain SGD (no weight decay), lookups update the rows they read in their backward
    pass, so a step never touches a whole table (embeddings/sparse_update.py)."""
    if run.optimizer == "sgd" and run.weight_decay == 0:
        for table in model.embeddings():
            enable_sparse_sgd(table, run.lr)


def make_optimizer(model: nn.Module, run: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    # On CUDA the fused kernels update every tensor in one launch; AdamW's capturable flag keeps
    # its step counter on the device so the update can live inside a CUDA graph (SGD has none).
    # optim.AdamW is that AdamW, updating a stack's flat tables with one program each.
    cuda = device.type == "cuda"
    if run.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=run.lr, weight_decay=run.weight_decay,
                               fused=cuda or None)
    if cuda:
        return AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)


def make_stepper(stepper: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 split: Split | HostSplit, batch_size: int, device: torch.device,
                 shuffle: str = "rows"):
    """auto: a CUDA graph of static steps on CUDA, the plain loop elsewhere; static steps
    streamed through a device window when the split is in host memory. shuffle: the order of
    an epoch's rows (order.py), the same whichever stepper."""
    if stepper not in STEPPERS:
        raise ConfigError(f"unknown stepper '{stepper}'; choose from: {', '.join(STEPPERS)}")
    if isinstance(split, HostSplit):
        graph = device.type == "cuda" and stepper in ("auto", "graph")
        return StreamingEpoch(model, optimizer, split, batch_size, graph, device,
                              shuffle=shuffle)
    if stepper == "auto":
        stepper = "graph" if device.type == "cuda" else "plain"
    if stepper == "plain" and distributed.shard() is not None:
        stepper = "static"  # shards of a global batch need its static shape
    if stepper == "plain":
        return PlainEpoch(model, optimizer, split, batch_size, shuffle)
    if stepper == "graph" and device.type != "cuda":
        raise ConfigError("the 'graph' stepper needs a CUDA device; use 'static' or 'plain'")
    return StaticEpoch(model, optimizer, split, batch_size, use_graph=stepper == "graph",
                       shuffle=shuffle)


def device_splits(data: Data, device: torch.device, input: str = "auto") -> list:
    """[train, val, test] on the device (test None where the dataset has none). input: where
    the training rows live: on the device, or streamed from host memory ("stream"; "auto"
    streams a Criteo dataset that would not fit in half the device's free memory)."""
    if input not in INPUTS:
        raise ConfigError(f"unknown input '{input}'; choose from: {', '.join(INPUTS)}")
    if isinstance(data, CriteoData):
        held_out = [data.tensors(name).to(device) for name in ("val", "test")]
        if input == "stream" or (input == "auto" and not fits_on_device(data, device)):
            return [HostSplit.of(data, "train"), *held_out]
        return [data.tensors("train").to(device), *held_out]
    if input == "stream":
        raise ConfigError("input 'stream' is for Criteo datasets; interaction data always "
                          "fits on the device")
    return [data.train.to(device), data.val.to(device),
            data.test.to(device) if data.test is not None else None]


def train(run: RunConfig, data: Data, device: str | torch.device = "auto",
          on_epoch: EpochCallback | None = None, stepper: str = "auto",
          input: str = "auto", on_cluster: ClusterCallback | None = None) -> RunResult:
    """Train and evaluate one run. `stepper` (how steps are launched) and `input` (where the
    training rows live) change the speed, never the result."""
    return train_many([run], data, device, on_epoch, stepper, input, on_cluster=on_cluster)[0]


def train_many(runs: list[RunConfig], data: Data, device: str | torch.device = "auto",
               on_epoch: EpochCallback | None = None, stepper: str = "auto",
               input: str = "auto", stack: bool = True,
               on_cluster: ClusterCallback | None = None) -> list[RunResult]:
    """Train several runs of one dataset and batch size in lockstep, each as if alone.

    On CUDA one step of every run is captured in one graph, each run on its own branch, so
    the small kernels of different runs execute side by side and one launch advances them
    all; the numbers are those of training each run alone. The group advances from one
    evaluation or clustering point of any of its runs to the next. A record's train_s is the
    group's wall time since that run's previous record, clustering and evaluation excluded.

    stack: runs of one method and shapes (stacking.stack_key) train as one stacked model, one
    branch of the graph for all of them (stacking.py); False trains every run on its own.
    """
    device = resolve_device(device)
    if len({lockstep_key(r) for r in runs}) > 1:
        raise ConfigError("runs trained together need the same dataset, model, batch size and "
                          "precision")
    with training_context(runs[0].precision, device):
        return _train_lockstep(runs, data, device, on_epoch, stepper, input, stack, on_cluster)


@contextlib.contextmanager
def training_context(precision: str, device: torch.device) -> Iterator[None]:
    """What a group of runs trains under: its matmul precision (dense_precision), and its GPU
    as the current one, since Triton programs (kernels/) and CUDA graph captures run on the
    current device, not on their tensors' own."""
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with dense_precision(precision), on_device:
        yield


def lockstep_key(run: RunConfig) -> tuple:
    """What runs trained together in lockstep must share: the steps per epoch, and the
    process-wide matmul precision."""
    return run.dataset, run.model, run.batch_size, run.precision


def _train_lockstep(runs: list[RunConfig], data: Data, device: torch.device,
                    on_epoch: EpochCallback | None, stepper: str,
                    input: str, stack: bool = True,
                    on_cluster: ClusterCallback | None = None) -> list[RunResult]:
    splits = device_splits(data, device, input)
    # Several runs on CUDA: their steps are captured together in one graph (see capture_steps).
    grouped = device.type == "cuda" and len(runs) > 1 and stepper in ("auto", "graph")
    stack = (stack and stepper != "plain" and not isinstance(splits[0], HostSplit)
             and distributed.shard() is None)
    states = run_states(runs, data, splits, device, "static" if grouped else stepper, stack)
    for state in states:
        state.on_cluster = on_cluster
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    active, graph, captured = list(states), None, []
    steps = states[0].epochs.steps
    while active:
        for state in active:
            state.epochs.prepare(state.shuffle)
            state.segment_start = device_clock(device)
        position = 0
        while active and position < steps:
            stop = min(state.next_point(position) for state in active)
            steppers = list(dict.fromkeys(s.epochs.stepper for s in active))  # a stack once
            if grouped and (captured != active or any(s.moved() for s in steppers)):
                graph, captured = capture_steps(steppers), list(active)
            for _ in range(stop - position):
                if graph is not None:
                    for epochs in steppers:
                        epochs.feed()
                    graph.replay()
                else:
                    for epochs in steppers:
                        epochs.step()
            position = stop
            for state in active:
                state.reached(position, on_epoch)
                if state.done:
                    state.epochs.retire()
            active = [state for state in active if not state.done]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    for state in states:
        state.epochs.close()
        state.result.peak_mem_bytes = peak
        # Sizes of the trained model: a post-training method (pq) shrinks when it compresses.
        state.result.set_sizes(state.model)
        state.result.still_improving = state.still_improving()
    return [state.result for state in states]


def run_states(runs: list[RunConfig], data: Data, splits: list, device: torch.device,
               stepper: str, stack: bool) -> list["RunState"]:
    """One RunState per run, in order; with stack, the runs of each stack share one
    StackedEpoch and one optimizer (stacking.py). train_many steps them; benchmarks build
    them to time a group's step, evaluation and clustering apart (sweeps/bench_reproduce.py)."""
    states: list[RunState | None] = [None] * len(runs)
    for group in plan_stacks(runs) if stack else [[i] for i in range(len(runs))]:
        if len(group) == 1:
            states[group[0]] = RunState(runs[group[0]], data, splits, device, stepper)
            continue
        members = [RunState(runs[i], data, splits, device, None) for i in group]
        models = [state.model for state in members]
        optimizer = make_optimizer(nn.ModuleList(models), runs[group[0]], device)
        epochs = StackedEpoch(models, optimizer, splits[0], runs[group[0]].batch_size,
                              runs[group[0]].shuffle, find_twins([runs[i] for i in group], models))
        for i, state, member in zip(group, members, epochs.members):
            state.optimizer, state.epochs = optimizer, member
            states[i] = state
    return states


class RunState:
    """One run's model, optimizer, stepper and progress through its steps. stepper None: the
    caller gives it both (a stack's shared ones)."""

    on_cluster: ClusterCallback | None = None  # told before each cluster()

    def __init__(self, run: RunConfig, data: Data, splits: list, device: torch.device,
                 stepper: str | None):
        self.run, self.device = run, device
        self.train_split, self.val_split, self.test_split = splits
        torch.manual_seed(run.seed)
        self.model = build_model(run, data).to(device)
        if distributed.shard() is not None:
            distributed.broadcast_module(self.model)  # replicas start equal whatever the device
        fuse_sparse_updates(self.model, run)
        self.result = RunResult("ok", 0, 0, 0, device=str(device))
        self.result.set_sizes(self.model)
        if stepper is not None:
            self.optimizer = make_optimizer(self.model, run, device)
            self.epochs = make_stepper(stepper, self.model, self.optimizer, self.train_split,
                                       run.batch_size, device, run.shuffle)
        self.shuffle = torch.Generator(device=device)
        self.shuffle.manual_seed(run.seed)
        self.epoch, self.step, self.done = 0, 0, False  # epochs finished, steps taken
        self.recorded_rows = 0  # rows of this epoch already in a record
        self.pending_cluster_s, self.segment_start = 0.0, 0.0
        self.best_bce, self.best_auc = math.inf, -math.inf
        self.stopped_early = False
        self.scored_from = 0  # the first record scored (a post-training method: after compressing)

    def still_improving(self) -> bool:
        """Ran out of epochs (neither stopped early nor diverged) while its last epoch still
        improved on the epochs before it by more than the early-stop tolerance."""
        if self.result.status != "ok" or self.stopped_early:
            return False
        points = [(r.epoch, r.val_bce, r.val_auc) for r in self.result.epochs[self.scored_from:]]
        return improved_in_last_epoch(points, self.run.early_stop or IMPROVING_TOLERANCE)

    @property
    def total_steps(self) -> int:
        return self.epochs.steps * self.run.epochs

    def next_point(self, position: int) -> int:
        """The next position of this epoch (> position) where the run evaluates or clusters."""
        steps, base = self.epochs.steps, self.epoch * self.epochs.steps
        candidates = [steps]
        for every in (self.run.eval_every, self.run.cluster_every):
            if every:
                candidates.append(((base + position) // every + 1) * every - base)
        return min(candidates)

    def reached(self, position: int, on_epoch: EpochCallback | None) -> None:
        """The group has taken this epoch's steps up to position: evaluate and cluster on the
        run's schedule, and decide whether to stop."""
        run, steps = self.run, self.epochs.steps
        self.step = self.epoch * steps + position
        end_of_epoch = position == steps
        if end_of_epoch:
            self.epoch += 1
        if run.cluster_every:
            cluster_now = run.clusters_at_step(self.step, self.total_steps)
        else:
            cluster_now = end_of_epoch and run.clusters_after(self.epoch)
        if end_of_epoch or (run.eval_every and self.step % run.eval_every == 0):
            self._record(position, end_of_epoch, cluster_now, on_epoch)
        elif cluster_now:
            self.pending_cluster_s += self.cluster(self.epoch + 1)
            self.segment_start = device_clock(self.device)
        self.done = self.done or self.epoch >= run.epochs

    def _record(self, position: int, end_of_epoch: bool, cluster_now: bool,
                on_epoch: EpochCallback | None) -> None:
        """Evaluate, record, cluster on schedule, and decide whether to stop."""
        run, device = self.run, self.device
        train_s = device_clock(device) - self.segment_start
        rows = min(position * run.batch_size, len(self.train_split))
        segment_rows, self.recorded_rows = rows - self.recorded_rows, 0 if end_of_epoch else rows
        start = device_clock(device)
        val_bce, val_auc = self.evaluate_split(self.val_split)
        test_bce, test_auc = (self.evaluate_split(self.test_split) if self.test_split is not None
                              else (None, None))
        loss = self.epochs.loss_total()
        if distributed.shard() is not None:
            distributed.sum_value(loss)  # each process summed its shards
            # Process 0's metrics everywhere: every process stops at the same point.
            val_bce, val_auc = distributed.broadcast_values([val_bce, val_auc], device)
        train_bce = float(loss) / max(segment_rows, 1)  # the one sync per evaluation
        loss.zero_()
        eval_s = device_clock(device) - start

        finite = all(math.isfinite(b) and b < DIVERGED_BCE for b in (train_bce, val_bce))
        awaiting = awaiting_compression(self.model)
        cluster_s, self.pending_cluster_s = self.pending_cluster_s, 0.0
        if finite and cluster_now:
            cluster_s += self.cluster(self.epoch if end_of_epoch else self.epoch + 1)
        record = EpochRecord(self.epoch if end_of_epoch else self.epoch + 1, self.step, train_bce,
                             val_bce, val_auc, test_bce, test_auc, train_s, cluster_s, eval_s,
                             segment_rows / max(train_s, 1e-9))
        self.result.epochs.append(record)
        if on_epoch is not None:
            on_epoch(run, record)
        if not finite:
            self.result.status, self.done = "diverged", True
        elif (not awaiting
              and _should_stop(run.early_stop, val_bce, val_auc, self.best_bce, self.best_auc)):
            self.done = self.stopped_early = True
        else:
            self.best_bce, self.best_auc = min(self.best_bce, val_bce), max(self.best_auc, val_auc)
        if awaiting and not awaiting_compression(self.model):
            # A post-training method (pq) just compressed: early stopping compares the
            # compressed model with itself, never with the full table it was.
            self.best_bce, self.best_auc = math.inf, -math.inf
            self.scored_from = len(self.result.epochs)
        self.segment_start = device_clock(device)

    def evaluate_split(self, split: Split) -> tuple[float, float]:
        """(BCE, AUC) of the run on a split; a stacked run's come from its stack, which
        evaluates all of its runs at once (stacking.py)."""
        if isinstance(self.epochs, StackMember):
            return self.epochs.evaluate(split, self.step)
        return evaluate(self.model, split)

    def cluster(self, epoch: int) -> float:
        """cluster() every table that has it; returns the seconds it took (for a stack's first
        run to ask at a step, the k-means of its stack mates too: StackedEpoch.cluster)."""
        if self.on_cluster is not None and has_clustering(self.model):
            self.on_cluster(self.run, epoch, self.step)
        start = device_clock(self.device)
        with dense_precision("fp32"):  # k-means distances exact, whatever the run's precision
            if isinstance(self.epochs, StackMember):  # its k-means batched with its stack's
                self.epochs.cluster(self.step)
            else:
                cluster_all(self.model, self.optimizer)
        if distributed.shard() is not None:
            distributed.broadcast_module(self.model)  # k-means on several devices may differ
        self.epochs.invalidate()
        return device_clock(self.device) - start


@torch.no_grad()
def predict(model: nn.Module, split: Split) -> torch.Tensor:
    model.eval()
    return torch.cat([
        model(*(feature[s:s + EVAL_BATCH] for feature in split.features))
        for s in range(0, len(split), EVAL_BATCH)
    ])


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
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


def has_clustering(model: nn.Module) -> bool:
    """Whether cluster_all has work on this model (a batch of tables clusters when its
    members do: DLRM's batched hash tables do not, CCE's do)."""
    return any(hasattr(m, "cluster") and hasattr(getattr(m, "members", [m])[0], "cluster")
               for m in model.modules() if m is not model)


def _should_stop(tolerance: float, bce: float, auc: float, best_bce: float, best_auc: float) -> bool:
    if tolerance <= 0 or not math.isfinite(best_bce):
        return False
    return bce > best_bce * (1 + tolerance) and auc < best_auc * (1 - tolerance)


def improved_in_last_epoch(points: Sequence[tuple[int, float, float]], tolerance: float) -> bool:
    """Whether a run's last epoch improved on the epochs before it by more than `tolerance`.

    points: (epoch, val_bce, val_auc) of the run's scored evaluation points, in order. The best
    val BCE of the last epoch's points must lie below the best of the earlier epochs' points by
    more than the fraction `tolerance` (bce < best x (1 - tolerance)), or the best val AUC above
    theirs by more (auc > best x (1 + tolerance)): the mirror of early stopping, which stops
    when both got worse by that fraction. A run of one epoch compares its last point with the
    ones before it; a run with a single point has nothing to compare with (False).
    """
    if len(points) < 2:
        return False
    last_epoch = points[-1][0]
    before = [p for p in points if p[0] < last_epoch]
    recent = [p for p in points if p[0] == last_epoch]
    if not before:
        before, recent = list(points[:-1]), list(points[-1:])
    best_bce, best_auc = min(p[1] for p in before), max(p[2] for p in before)
    return (min(p[1] for p in recent) < best_bce * (1 - tolerance)
            or max(p[2] for p in recent) > best_auc * (1 + tolerance))


def device_clock(device: torch.device) -> float:
    """Seconds on the host clock once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
