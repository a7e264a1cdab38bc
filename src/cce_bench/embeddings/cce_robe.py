"""CCE on ROBE arrays: Clustered Compositional Embeddings (Tsang & Ahle, NeurIPS 2023,
arXiv:2210.05974) whose two tables are circular arrays read in windows, as in ROBE (Desai et
al., MLSys 2022, arXiv:2108.02191).

Per chunk j there are two circular arrays A0_j and A1_j of L values each; a slot s names the
window of w = dim / c values starting at s, wrapping around:
    e_j(i) = A0_j[idx_j(i) : idx_j(i) + w] + A1_j[h_j(i) : h_j(i) + w]     (positions mod L),
with idx_j(i) in [0, L) a stored per-id slot (random at first) and h_j a universal hash into
[0, L). Where CCE has rows / chunk distinct rows in table 1, this has L overlapping windows.

cluster() is CCE's (cce.py), steps (a)-(f), with these readings of "row":
  (b) k-means with k = L // w centroids on the sampled chunk vectors;
  (c) A0_j := the k centroids laid end to end (positions k*w.. zeroed), idx_j(i) := r * w for
      its nearest centroid r, so table 0 is an ordinary table until the next round;
  (e) each weight of A1_j := the mean of the residual coordinates that read it (0 where none):
      the per-row mean of CCE when windows do not overlap.
Budget: L = num_params // (2c), params 2cL; at least one window per array, L >= w, so the
smallest budget is 2 * dim (as for cce).
Stores the slot index (vocab x c int32), the c hash functions (4 int64 each) and the round
counter (one int64; buffers).
Shape: ids (*S) -> (*S, dim).

Departures: the authors' cce_robe shares one array across chunks, stores a random (not hashed)
table-1 offset per id, and fits table 0 by "rotary" k-means whose centroids are all L
overlapping windows. Here each chunk has its own arrays so that the k-means problems of the
chunks stay independent, and centroids are free vectors from the shared k-means backends, which
keeps steps (a)-(f) and their tests identical to cce's.
"""

from __future__ import annotations

import torch

from ..errors import BudgetTooSmall
from .base import normal_init
from .cce import CCEmbedding
from .registry import register
from .robe import circular_positions, read_windows


@register("cce_robe")
class CCERobeEmbedding(CCEmbedding):
    def _make_tables(self, num_params: int, std: float) -> None:
        c, w = self.n_chunks, self.width
        self.size = num_params // (2 * c)  # L, values per array
        if self.size < w:
            raise BudgetTooSmall("cce_robe", num_params, 2 * c * w,
                                 f"dim {self.dim}, {c} chunks: one window per array")
        self.rows, self.slots = self.size // w, self.size
        self.table0 = normal_init((c, self.size), std, self.generator)
        self.table1 = normal_init((c, self.size), std, self.generator)

    def _read(self, table: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        base = torch.arange(self.n_chunks, device=slots.device).view(1, -1) * self.size  # (1, c)
        windows = read_windows(table.reshape(-1), slots.unsqueeze(0),
                               slots.new_full((1,), self.size, dtype=torch.int64), base,
                               self.width)
        return windows.reshape(len(slots), self.dim)

    def _positions(self, slots: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        chunk = torch.arange(self.n_chunks, device=slots.device).view(1, -1, 1)
        windows = circular_positions(slots, self.width, lengths.unsqueeze(-1))  # (R, c, N, w)
        return (chunk * lengths).unsqueeze(-1) + windows

    def _store_centroids(self, centroids: torch.Tensor) -> None:
        self.table0.zero_()
        self.table0[:, :centroids.shape[1] * self.width] = centroids.reshape(self.n_chunks, -1)

    def _slot_of_centroid(self, assign: torch.Tensor) -> torch.Tensor:
        return assign * self.width

    def config(self) -> dict:
        return {"size": self.size, "rows": self.rows, "n_chunks": self.n_chunks}
