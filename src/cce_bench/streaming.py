"""Training batches streamed from host memory, for data larger than the device's memory.

Criteo Kaggle (45.8M rows, about 7 GB) lives on an H200 for a whole run; Terabyte (4.4B rows)
lives nowhere but the memory-mapped cache. `StreamingEpoch` takes the same steps as the resident
`StaticEpoch`, over the same permutation of the same rows, but its device buffers hold a window
of `window` batches, not the whole epoch: a background thread gathers the rows of the next
window from the (memory-mapped) host arrays into pinned memory while the device trains on the
current one, and the window is copied in with one asynchronous transfer per column. The step
reads batch `cursor % window` of the window, so it is captured in a CUDA graph as before.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import CriteoData
from .steps import StaticEpoch

DEFAULT_WINDOW = 1024  # batches per window: 21 MB a window for Kaggle at batch 128


@dataclass
class HostSplit:
    """A split as host arrays (numpy, memory-mapped or not): features in model order, labels."""

    features: tuple[np.ndarray, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, data: CriteoData, name: str) -> "HostSplit":
        part = data.split(name)
        return cls((part.dense, part.categorical), part.labels)


class StreamingEpoch(StaticEpoch):
    """StaticEpoch's steps with batches streamed through a device window (see module doc)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, split: HostSplit,
                 batch_size: int, use_graph: bool, device: torch.device,
                 window: int | None = None):
        self.model, self.optimizer, self.host = model, optimizer, split
        self.batch_size, self.use_graph, self.device = batch_size, use_graph, device
        self.steps = math.ceil(len(split) / batch_size)
        self.window = min(window or DEFAULT_WINDOW, self.steps)
        dtypes = [torch.from_numpy(np.array(f[:1])).dtype for f in split.features]
        self.inputs = [torch.zeros(self.window, batch_size, *f.shape[1:], dtype=dtype,
                                   device=device) for f, dtype in zip(split.features, dtypes)]
        self.labels = torch.zeros(self.window, batch_size, device=device)
        self.weight = torch.zeros(self.window, batch_size, device=device)
        self._init_step_state(device)
        self.position = 0  # steps taken this epoch, counted on the host
        self.order = np.empty(0, dtype=np.int64)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cce-bench-input")
        self.pending: Future | None = None

    def _slot(self) -> torch.Tensor:
        return self.cursor % self.window

    def prepare(self, generator: torch.Generator) -> None:
        # The permutation a resident epoch draws from the same generator, so the batches are
        # the same rows in the same order.
        order = torch.randperm(len(self.host), generator=generator, device=generator.device)
        self.order = order.cpu().numpy()
        self.position = 0
        self.cursor.zero_()
        self.loss_sum.zero_()
        self.model.train()
        self.invalidate()
        self.pending = self.pool.submit(self._gather, 0)

    def _gather(self, first_step: int) -> list[torch.Tensor]:
        """The rows of the window starting at first_step, as (pinned) host tensors."""
        rows = self.order[first_step * self.batch_size:
                          (first_step + self.window) * self.batch_size]
        columns = [np.take(f, rows, axis=0) for f in self.host.features]
        columns.append(np.take(self.host.labels, rows).astype(np.float32))
        tensors = [torch.from_numpy(np.ascontiguousarray(c)) for c in columns]
        return [t.pin_memory() for t in tensors] if self.device.type == "cuda" else tensors

    def feed(self) -> None:
        """At the start of a window: copy it in, and start gathering the next one."""
        if self.position % self.window == 0:
            *features, labels = self.pending.result()
            n = len(labels)
            for column, host in zip(self.inputs, features):
                column.view(-1, *column.shape[2:])[:n].copy_(host, non_blocking=True)
            self.labels.view(-1)[:n].copy_(labels, non_blocking=True)
            self.weight.view(-1)[:n] = 1.0
            self.weight.view(-1)[n:] = 0.0  # the last window's padding (stale rows, no weight)
            following = self.position + self.window
            self.pending = self.pool.submit(self._gather, following) \
                if following < self.steps else None
        self.position += 1

    def step(self) -> None:
        self.feed()
        super().step()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def fits_on_device(data: CriteoData, device: torch.device, headroom: float = 0.5) -> bool:
    """Whether the rows of every split, and an epoch's permutation of the training rows (a
    StaticEpoch over more than copy_limit_bytes gathers through it instead of copying), fit
    in `headroom` of the device's free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    row_bytes = data.dense[:1].nbytes + data.categorical[:1].nbytes + 4
    train = data.split_sizes["train"]
    copy = train * row_bytes if train * row_bytes <= StaticEpoch.copy_limit_bytes else 0
    need = (row_bytes * (train + data.split_sizes["val"] + data.split_sizes["test"])
            + copy + 8 * train)
    return need <= headroom * free
