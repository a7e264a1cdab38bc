"""How an epoch of training steps runs: the plain loop, or static steps replayed as a CUDA graph.

GMF runs are tiny (a batch of 4096 is a few gathers and a dot product), so on a GPU their time
goes to kernel launches and host round trips, not arithmetic. `StaticEpoch` removes both: every
step has the same shapes (the last, partial batch is padded and its padding masked out), the
batch is found on the device from a step counter, and the whole step (forward, backward, AdamW)
is captured once in a CUDA graph and replayed with one launch per step. Without CUDA it runs the
same static step eagerly, which is what the CPU tests compare with the plain loop.

Both compute the same thing: each step's loss is the mean BCE over the real rows of its batch,
and the rows come in the same order drawn from the same generator (order.py: a permutation of
all rows, or of blocks of rows, as the run's `shuffle` says).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import InteractionSplit, TabularSplit
from .distributed import shard, sum_gradients
from .order import EpochOrder

Split = InteractionSplit | TabularSplit  # anything with .features, .labels and len()


class _Epoch:
    """What both steppers share: prepare(generator), then step() `steps` times."""

    steps: int
    loss_sum: torch.Tensor

    def prepare(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    @property
    def stepper(self) -> "_Epoch":
        """What train_many steps for this run: the epoch itself, or the stack it is a row of
        (stacking.py)."""
        return self

    def retire(self) -> None:
        """The run stopped (a stack then leaves it out of its steps)."""

    def feed(self) -> None:
        """Bring in the next step's batch where it is not on the device yet (streaming)."""

    def close(self) -> None:
        """Release what the epoch holds besides tensors (streaming: its input thread)."""

    def loss_total(self) -> torch.Tensor:
        """The epoch's summed loss, a device tensor (reading it is the epoch's one sync)."""
        return self.loss_sum

    def run(self, generator: torch.Generator) -> torch.Tensor:
        """One whole epoch; returns the summed loss."""
        self.prepare(generator)
        for _ in range(self.steps):
            self.step()
        return self.loss_total()


class PlainEpoch(_Epoch):
    """Shuffled batches launched op by op (the reference the static steps are checked against).

    Use: prepare(generator) once an epoch, then step() `steps` times, then loss_total().
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, split: Split,
                 batch_size: int, shuffle: str = "rows"):
        self.model, self.optimizer, self.split, self.batch_size = model, optimizer, split, batch_size
        self.shuffle = shuffle
        self.steps = math.ceil(len(split) / batch_size)
        self.device = split.labels.device
        self.order = torch.empty(0, dtype=torch.int64)
        self.position = 0
        self.loss_sum = torch.zeros((), device=self.device)

    def prepare(self, generator: torch.Generator) -> None:
        self.order = EpochOrder(len(self.split), generator, self.shuffle).all().to(self.device)
        self.position = 0
        self.loss_sum = torch.zeros((), device=self.device)
        self.model.train()

    def step(self) -> None:
        rows = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        logits = self.model(*(feature[rows] for feature in self.split.features))
        loss = F.binary_cross_entropy_with_logits(logits, self.split.labels[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * rows.shape[0]

    def invalidate(self) -> None:
        """Nothing is cached between epochs."""


class StaticEpoch(_Epoch):
    """Static-shape steps over a padded permutation; a CUDA graph of one step when use_graph."""

    copy_limit_bytes = 1 << 30  # above this, batches are gathered through the permutation
    permutation: torch.Tensor | None = None  # (steps, batch) row numbers, when gathering

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, split: Split,
                 batch_size: int, use_graph: bool, shuffle: str = "rows"):
        self.model, self.optimizer, self.split = model, optimizer, split
        self.batch_size, self.use_graph, self.shuffle = batch_size, use_graph, shuffle
        device = split.labels.device
        n = len(split)
        self.steps = math.ceil(n / batch_size)
        padded = self.steps * batch_size
        # This epoch's rows in batch order, padded to whole batches (padding rows have weight
        # 0): a step then reads batch `cursor` with one index_select per column. A large split
        # (Criteo: 6 GB a copy, one per run of a lockstep group) keeps only the permutation and
        # gathers each batch's rows from the split itself.
        row_bytes = sum(f[:1].numel() * f.element_size() for f in split.features) + 4
        self.permutation = None
        if n * row_bytes > self.copy_limit_bytes:
            self.permutation = torch.zeros(self.steps, batch_size, dtype=torch.int64,
                                           device=device)
            self.inputs, self.labels = [], None
        else:
            self.inputs = [torch.zeros(self.steps, batch_size, *f.shape[1:], dtype=f.dtype,
                                       device=device) for f in split.features]
            self.labels = torch.zeros(self.steps, batch_size, device=device)
        self.weight = (torch.arange(padded, device=device) < n).float().view(self.steps, batch_size)
        self._init_step_state(device)

    def _init_step_state(self, device: torch.device) -> None:
        """What a step reads and writes besides its batch: the step counter, the summed loss,
        the captured graph, and under --ddp this process's shard of every global batch."""
        self.cursor = torch.zeros(1, dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.pointers: list[int] = []
        place = shard()
        self.bounds = place.bounds(self.batch_size) if place is not None else None

    def _slot(self) -> torch.Tensor:
        """The buffer row that holds this step's batch (a device tensor: no host sync)."""
        return self.cursor

    def _step(self) -> None:
        slot = self._slot()

        def batch(table: torch.Tensor) -> torch.Tensor:
            rows = table.index_select(0, slot)[0]  # (B, ...)
            return rows if self.bounds is None else rows[self.bounds[0]:self.bounds[1]]

        count = self.weight.index_select(0, slot)[0].sum()  # the global batch's real rows
        weight = batch(self.weight)
        if self.permutation is None:
            inputs, labels = [batch(column) for column in self.inputs], batch(self.labels)
        else:  # padding rows read row 0, with weight 0
            rows = batch(self.permutation)
            inputs = [f.index_select(0, rows) for f in self.split.features]
            labels = self.split.labels.index_select(0, rows).float()
        logits = self.model(*inputs)
        losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        loss = (losses * weight).sum() / count
        loss.backward()
        if self.bounds is not None:
            sum_gradients(self.model)
        self.optimizer.step()
        self.loss_sum += loss.detach() * count
        self.cursor += 1

    def prepare(self, generator: torch.Generator) -> None:
        n = len(self.split)
        order = EpochOrder(n, generator, self.shuffle).all().to(self.weight.device)
        if self.permutation is not None:
            self.permutation.view(-1)[:n] = order
        for column, feature in zip(self.inputs, self.split.features):
            column.view(-1, *feature.shape[1:])[:n] = feature[order]
        if self.labels is not None:
            self.labels.view(-1)[:n] = self.split.labels[order]
        self.cursor.zero_()
        self.loss_sum.zero_()
        self.model.train()
        self.invalidate()

    def step(self) -> None:
        if self.use_graph and self.graph is None:
            self._capture()  # first step, or the first after something moved the model's tensors
        if self.graph is not None:
            self.graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._step()

    def invalidate(self) -> None:
        """Call after anything may have reallocated the model's tensors (e.g. cluster())."""
        if self.graph is not None and self.moved():
            self.graph = None

    def _tensors(self) -> list[torch.Tensor]:
        state = [t for s in self.optimizer.state.values() for t in s.values()
                 if isinstance(t, torch.Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), *state]

    def moved(self) -> bool:
        """Whether any tensor a captured graph reads was reallocated since the capture."""
        return [t.data_ptr() for t in self._tensors()] != self.pointers

    def _capture(self) -> None:
        self.graph = capture_steps([self])

    def mark_captured(self) -> None:
        self.pointers = [t.data_ptr() for t in self._tensors()]


def capture_steps(epochs: list[StaticEpoch]) -> torch.cuda.CUDAGraph:
    """One CUDA graph holding one step of every run, each run on its own branch.

    Several runs go into one graph, not one graph each, for two reasons: a replay then
    advances every run with one launch, and each capture starts by clearing cuBLAS's
    workspaces, which graphs captured earlier may still point at (replaying those crashes).
    Warm-up steps create the optimizer state and cuBLAS handles; their updates are undone.
    Only a stepper not captured before, or whose tensors moved since, takes them: a group
    recaptures all its steppers whenever one run stops, and the others' state already exists.
    """
    fresh = [e for e in epochs if not e.pointers or e.moved()]
    saved = [(_snapshot(e.model, e.optimizer), e.cursor.clone(), e.loss_sum.clone())
             for e in fresh]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for epoch in fresh:
            for _ in range(3):
                epoch.optimizer.zero_grad(set_to_none=True)
                epoch._step()
    torch.cuda.current_stream().wait_stream(side)
    for epoch in epochs:
        epoch.optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    branches = [torch.cuda.Stream() for _ in epochs] if len(epochs) > 1 else [None]
    with torch.cuda.graph(graph):
        trunk = torch.cuda.current_stream()
        for epoch, branch in zip(epochs, branches):
            if branch is None:
                epoch._step()
                continue
            branch.wait_stream(trunk)  # forks the capture onto the branch
            with torch.cuda.stream(branch):
                epoch._step()
        for branch in branches:
            if branch is not None:
                trunk.wait_stream(branch)  # and joins it back
    for epoch, (state, cursor, loss_sum) in zip(fresh, saved):
        _restore(epoch.model, epoch.optimizer, state)
        epoch.cursor.copy_(cursor)
        epoch.loss_sum.copy_(loss_sum)
    for epoch in epochs:
        epoch.mark_captured()
    return graph


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    had_state = {p for p in optimizer.state}
    return {
        "tensors": [t.detach().clone() for t in [*model.parameters(), *model.buffers()]],
        "state": {p: {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                  for p, s in optimizer.state.items()},
        "had_state": had_state,
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Put back the values from before the warm-up, in place (the graph holds these tensors).

    Optimizer state that the warm-up created is zeroed rather than removed, which for Adam(W)
    is the same as no state: zero moments and step 0.
    """
    with torch.no_grad():
        for tensor, value in zip([*model.parameters(), *model.buffers()], saved["tensors"]):
            tensor.copy_(value)
        for param, state in optimizer.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    if param in saved["had_state"]:
                        value.copy_(saved["state"][param][key])
                    else:
                        value.zero_()


def reset_optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Give params a fresh optimizer state, in place, so captured graphs stay valid."""
    with torch.no_grad():
        for param in params:
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
