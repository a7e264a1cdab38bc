"""The order in which an epoch visits a split's training rows (a run's `shuffle`).

- "rows" (the default): a uniformly random permutation of all rows, `torch.randperm(n)` from
  the run's generator on its device, as every run drew it before `shuffle` existed. It is held
  whole (Criteo Terabyte's 4.4B rows: 35 GB of int64), and a streamed window reads rows from
  anywhere in the cache (about 690 GB for Terabyte), which keeps up only when the whole
  dataset sits in the page cache.
- "blocks": the rows are cut into contiguous blocks of BLOCK_ROWS (the last one shorter); the
  epoch visits the blocks in a random order and the rows of each block in a random order of
  its own. At the start of an epoch the run's generator draws the block order and one seed
  per block, O(n / BLOCK_ROWS); a block's own permutation is drawn from its seed (a CPU
  generator) when the epoch reaches it, O(BLOCK_ROWS), so the positions of any range cost only
  the blocks it touches. A window of W batches of B rows reads about W * B / BLOCK_ROWS + 1
  blocks, each a contiguous range of the memory-mapped arrays (streaming.py reads it
  sequentially). DLRM's own Terabyte runs read their memory-mapped day files in file order;
  blocks keep that locality and still mix every block of the dataset over an epoch.

The resident steppers (steps.py) and the streamed one (streaming.py) both take their order
from `EpochOrder`, so a run has the same batches wherever its rows live.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Rows per block: 2^20 rows of Criteo (13 float32 dense, 26 int32 ids, a uint8 label: 157
# bytes a row) are 165 MB of the cache, and the Terabyte window (1,024 batches of 2,048 rows,
# 2^21 rows) spans two blocks; small enough that a block's permutation (8 MB) and its rows
# (one contiguous read) are cheap, large enough that the within-block shuffle mixes ~1M rows.
BLOCK_ROWS = 1 << 20
_CACHED_BLOCKS = 2  # a window that ends inside a block resumes in it at the next window


class EpochOrder:
    """The row numbers of an epoch's positions 0..n-1 (see module doc).

    rows(start, stop) gives positions [start, stop) as a CPU int64 tensor, segments(start,
    stop) the same split at block boundaries (one segment for "rows"), all() the whole order
    on the generator's device. Not for use from two threads at once (the block cache):
    streaming.py reads it from its one input thread only."""

    def __init__(self, n: int, generator: torch.Generator, shuffle: str = "rows",
                 block_rows: int | None = None):
        assert shuffle in ("rows", "blocks"), shuffle  # RunConfig validates user input
        self.n, self.shuffle, self.device = n, shuffle, generator.device
        self.block_rows = block_rows or BLOCK_ROWS
        if shuffle == "rows":
            self.permutation = torch.randperm(n, generator=generator, device=self.device)
            return
        n_blocks = math.ceil(n / self.block_rows)
        blocks = torch.randperm(n_blocks, generator=generator, device=self.device)
        seeds = torch.randint(0, 2**62, (n_blocks,), generator=generator, device=self.device)
        self.blocks, self.seeds = blocks.cpu().numpy(), seeds.cpu().numpy()  # (n_blocks,)
        sizes = np.minimum(self.block_rows, n - self.blocks * self.block_rows)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])  # (n_blocks + 1,) positions
        self.cache: dict[int, torch.Tensor] = {}

    def block(self, j: int) -> torch.Tensor:
        """The row numbers of the j-th block visited, in the order the epoch visits them."""
        if j not in self.cache:
            first = int(self.blocks[j]) * self.block_rows
            size = int(self.offsets[j + 1] - self.offsets[j])
            own = torch.Generator().manual_seed(int(self.seeds[j]))
            if len(self.cache) >= _CACHED_BLOCKS:
                self.cache.pop(next(iter(self.cache)))
            self.cache[j] = torch.randperm(size, generator=own) + first  # (size,)
        return self.cache[j]

    def segments(self, start: int, stop: int) -> list[torch.Tensor]:
        """Positions [start, stop) as row numbers (CPU int64), one tensor per block touched."""
        stop = min(stop, self.n)
        if start >= stop:
            return []
        if self.shuffle == "rows":
            return [self.on_host().permutation[start:stop]]
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        last = int(np.searchsorted(self.offsets, stop, side="left"))
        parts = []
        for j in range(first, last):
            base = int(self.offsets[j])
            parts.append(self.block(j)[max(start, base) - base:
                                       min(stop, int(self.offsets[j + 1])) - base])
        return parts

    def on_host(self) -> "EpochOrder":
        """This order with a "rows" permutation moved to host memory (one copy for the
        epoch, and none of the device's memory); blocks are drawn on the host anyway."""
        if self.shuffle == "rows" and self.permutation.device.type != "cpu":
            self.permutation = self.permutation.cpu()
        return self

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Positions [start, stop) as row numbers, a CPU int64 tensor."""
        parts = self.segments(start, stop)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    def all(self) -> torch.Tensor:
        """The whole order, (n,) int64 on the generator's device."""
        if self.shuffle == "rows":
            return self.permutation.to(self.device)
        return torch.cat([self.block(j) for j in range(len(self.blocks))]).to(self.device)
