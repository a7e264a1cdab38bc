"""Training batches streamed from host memory, for data larger than the device's memory.

Criteo Kaggle (45.8M rows, about 7 GB) lives on an H200 for a whole run; Terabyte (4.4B rows)
lives nowhere but the memory-mapped cache. `StreamingEpoch` takes the same steps as the resident
`StaticEpoch`, in the same order over the same rows (order.py), but its device buffers hold a
window of `window` batches, not the whole epoch: a background thread gathers the rows of the
next window from the (memory-mapped) host arrays into pinned memory while the device trains on
the current one, and the window is copied in with one asynchronous transfer per column. The
step reads batch `cursor % window` of the window, so it is captured in a CUDA graph as before.

With shuffle "blocks" the thread also draws each block's own permutation when the window
reaches it, and reads the rows of a block as one contiguous range of the arrays (a sequential
read of at most BLOCK_ROWS rows), permuted in memory: the page cache then needs to hold a
window's few blocks, not the dataset.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import CriteoData
from .order import EpochOrder
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
                 window: int | None = None, shuffle: str = "rows"):
        self.model, self.optimizer, self.host, self.shuffle = model, optimizer, split, shuffle
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
        self.order: EpochOrder | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cce-bench-input")
        self.pending: Future | None = None

    def _slot(self) -> torch.Tensor:
        return self.cursor % self.window

    def prepare(self, generator: torch.Generator) -> None:
        # The order a resident epoch draws from the same generator, so the batches are the
        # same rows in the same order.
        self.order = EpochOrder(len(self.host), generator, self.shuffle).on_host()
        self.position = 0
        self.cursor.zero_()
        self.loss_sum.zero_()
        self.model.train()
        self.invalidate()
        self.pending = self.pool.submit(self._gather, 0)

    def _gather(self, first_step: int) -> list[torch.Tensor]:
        """The rows of the window starting at first_step, as (pinned) host tensors."""
        segments = [s.numpy() for s in self.order.segments(
            first_step * self.batch_size, (first_step + self.window) * self.batch_size)]
        arrays = [*self.host.features, self.host.labels]
        span = self.order.block_rows if self.shuffle == "blocks" else 0  # rows: read in place
        columns = [np.concatenate([_take(a, rows, span) for rows in segments]) for a in arrays]
        columns[-1] = columns[-1].astype(np.float32)
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


def _take(array: np.ndarray, rows: np.ndarray, span: int) -> np.ndarray:
    """array[rows]. Rows within `span` of each other (one block's) are read as one contiguous
    range, then permuted in memory: a sequential read of the memory-mapped file, not a page
    fault per row in random order."""
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if hi - lo <= span:
        return np.take(np.array(array[lo:hi]), rows - lo, axis=0)  # the copy reads in order
    return np.take(array, rows, axis=0)


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
