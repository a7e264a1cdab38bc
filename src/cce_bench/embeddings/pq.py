"""Post-training product quantization (Jégou, Douze and Schmid, "Product Quantization for
Nearest Neighbor Search", IEEE TPAMI 2011), the upper reference of Tsang & Ahle (NeurIPS 2023,
arXiv:2210.05974): compress a table that was trained at full size.

Before compression e(i) = T[i], a full vocab x dim table. Compression (one cluster() call):
  (a) per chunk j, k-means with k = rows on the chunk-j vectors of a uniform sample of at most
      points_per_centroid * k ids (seeded from the module seed);
  (b) codebook C_j := the centroids; code_j(i) := the nearest centroid of T[i] chunk j, for all
      ids (in batches);
  (c) T is dropped; from then on e(i) = concat_j C_j[code_j(i)], and training goes on with the
      codebooks trainable and the codes fixed.
Budget: rows = min(num_params // dim, vocab) codewords per chunk, so the codebooks hold
rows x dim <= num_params values; at least one row (num_params >= dim).
Before compression the module holds the full table, num_parameters() = vocab x dim, above the
budget: the class says so with `post_training = True`, and `compressed` tells the two states
apart. After compression it stores the codes (vocab x c int32; log2(rows) bits would do, but
CCE's index is counted as int32 too) and the cluster() call counter (buffers).

When to compress: the engine calls cluster() after each epoch of its clustering schedule
(epochs 1 .. cluster_until x epochs) and passes `compress_round` = the number of those calls,
so the table trains at full size for as long as CCE clusters, then the codebooks fine-tune for
the epochs CCE fine-tunes. Alone (no engine) compress_round = 1: the first cluster() compresses.
The empty tensor of each state (the codebooks before, the table after) is a 0-element
parameter with requires_grad False, so the set of parameters, and with it an optimizer built
before compression, stays valid; cluster() returns both for their optimizer state to be reset.
Departures: none from PQ; fine-tuning the codebooks afterwards follows the issue's protocol
(the paper's text does not say whether its PQ reference was fine-tuned).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BudgetTooSmall, ConfigError
from ..kernels import take_rows
from .base import CompressedEmbedding, chunk_dim, gather_chunks, lookup, normal_init
from .kmeans import derive_seed, kmeans, nearest, resolve_backend
from .registry import register

_ID_BATCH = 1 << 18  # ids per batch when assigning codes over the whole vocabulary


@register("pq")
class ProductQuantizedEmbedding(CompressedEmbedding):
    post_training = True

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, *,
                 compress_round: int = 1, kmeans_backend: str = "auto", kmeans_iters: int = 50,
                 points_per_centroid: int = 256, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        self.n_chunks, self.width = n_chunks, chunk_dim("pq", dim, n_chunks)
        self.rows = min(num_params // dim, vocab)
        if self.rows < 1:
            raise BudgetTooSmall("pq", num_params, dim, f"dim {dim}: one codeword per chunk")
        if compress_round < 1:
            raise ConfigError(
                f"pq compresses on a cluster() call, but compress_round is {compress_round}: the "
                "run schedules no clustering; use at least 2 epochs and cluster_until > 0")
        self.compress_round = compress_round
        resolve_backend(kmeans_backend, torch.device("cpu"))  # an unknown name fails here
        self.kmeans_backend, self.kmeans_iters = kmeans_backend, kmeans_iters
        self.points_per_centroid = points_per_centroid
        self.table = normal_init((vocab, dim), self.output_std, self.generator)
        self.codebook = nn.Parameter(torch.zeros(n_chunks, 0, self.width), requires_grad=False)
        self.register_buffer("codes", torch.zeros(0, n_chunks, dtype=torch.int32))
        self.register_buffer("rounds", torch.zeros((), dtype=torch.int64))

    @property
    def compressed(self) -> bool:
        return self.codes.shape[0] > 0

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.compressed:
            return gather_chunks(self.codebook, take_rows(self.codes, ids).to(torch.int64))
        return lookup(self.table, ids)

    def config(self) -> dict:
        return {"rows": self.rows, "n_chunks": self.n_chunks,
                "compress_round": self.compress_round, "compressed": self.compressed}

    def compresses_next(self) -> bool:
        """Whether the next cluster() call compresses."""
        return not self.compressed and int(self.rounds) + 1 >= self.compress_round

    @torch.no_grad()
    def cluster(self) -> list[nn.Parameter]:
        """Count the call; on call number compress_round, compress (steps (a)-(c) above).

        Returns the parameters whose optimizer state the caller should reset.
        """
        self.rounds += 1
        if self.compressed or int(self.rounds) < self.compress_round:
            return []
        table, c, w = self.table.detach(), self.n_chunks, self.width
        n_sample = min(self.vocab, self.points_per_centroid * self.rows)
        gen = torch.Generator()
        gen.manual_seed(derive_seed(self.seed, "pq", "sample"))
        sample = torch.randperm(self.vocab, generator=gen)[:n_sample].to(table.device)
        points = table[sample].reshape(n_sample, c, w).transpose(0, 1)  # (c, n, w)
        centroids = kmeans(points.contiguous(), self.rows, iters=self.kmeans_iters,
                           seed=derive_seed(self.seed, "pq"), backend=self.kmeans_backend)  # (a)
        codes = torch.empty(self.vocab, c, dtype=torch.int32, device=table.device)
        for start in range(0, self.vocab, _ID_BATCH):  # (b)
            v = table[start:start + _ID_BATCH].reshape(-1, c, w).transpose(0, 1)  # (c, N, w)
            codes[start:start + _ID_BATCH] = nearest(v.contiguous(), centroids).T.to(torch.int32)
        self._set_state(codes, centroids.to(table.dtype), table.new_empty(0, self.dim))  # (c)
        return [self.table, self.codebook]

    def _set_state(self, codes: torch.Tensor, codebook: torch.Tensor, table: torch.Tensor) -> None:
        """Swap tensors in place, keeping the Parameter objects an optimizer may hold."""
        self.codes = codes
        self.codebook.data, self.table.data = codebook, table
        self.codebook.grad = self.table.grad = None
        self.codebook.requires_grad_(codebook.numel() > 0)
        self.table.requires_grad_(table.numel() > 0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A saved state may be from the other side of compression: take its shapes first.
        codes, codebook, table = (state_dict.get(prefix + name)
                                  for name in ("codes", "codebook", "table"))
        if codes is not None and codebook is not None and table is not None:
            self._set_state(torch.empty_like(codes, device=self.codes.device),
                            torch.empty_like(codebook, device=self.codebook.device),
                            torch.empty_like(table, device=self.table.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
