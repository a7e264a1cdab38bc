"""Clustered Compositional Embeddings (Tsang & Ahle, "Clustering the Sketch: Dynamic
Compression for Embedding Tables", NeurIPS 2023, arXiv:2210.05974).

Chunk j of id i is the sum of one row of each of two tables:
    e_j(i) = T0_j[idx_j(i)] + T1_j[h_j(i)],      e(i) = concat_j e_j(i),
where idx is a stored per-id index (random at first) and h_j a universal hash.

cluster(), per chunk j, computes from the state as it was before the call:
  (a) v_j(i) = e_j(i) for every id;
  (b) k-means with k = rows on a uniform sample of at most points_per_centroid * k ids
      (seeded from the module seed, the round and the chunk);
  (c) T0_j := centroids; idx_j(i) := nearest centroid of v_j(i), for all ids (in batches);
  (d) h_j := a fresh hash (one per chunk per round);
  (e) T1_j[r] := mean of v_j(i) - T0_j[idx_j(i)] over ids with h_j(i) = r (0 where none),
      or zero with residual_init="zero";
  (f) the optimizer state of T0 and T1 is reset (cluster() returns the tensors to reset).
The authors' implementation redraws the hash for the whole vocabulary inside its batch loop,
fills one coordinate of the residual and leaves unused rows NaN; this one does not.

Budget: rows = num_params // (2 * dim): per chunk two tables of rows x (dim / c) values.
Stores the index (vocab x c int32), the c hash functions and the round counter (buffers).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetTooSmall, ConfigError
from .base import CompressedEmbedding, chunk_dim, gather_chunks, normal_init
from .hashing import UniversalHash, universal_hash
from .kmeans import derive_seed, kmeans, nearest
from .registry import register

_ID_BATCH = 1 << 18  # ids per batch when recomputing vectors over the whole vocabulary


@register("cce", "clustering", "two hashed tables per chunk, re-clustered with k-means while training",
          "Tsang & Ahle, NeurIPS 2023 (arXiv:2210.05974)")
class CCEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, *,
                 kmeans_backend: str = "auto", kmeans_iters: int = 50,
                 points_per_centroid: int = 256, residual_init: str = "mean",
                 reset_optimizer: bool = True, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        width = chunk_dim("cce", dim, n_chunks)
        self.rows = num_params // (2 * dim)
        if self.rows < 1:
            raise BudgetTooSmall("cce", num_params, 2 * dim, f"dim {dim}: two rows of each table")
        if residual_init not in ("mean", "zero"):
            raise ConfigError(f"cce: residual_init must be 'mean' or 'zero', not '{residual_init}'")
        self.n_chunks = n_chunks
        self.kmeans_backend, self.kmeans_iters = kmeans_backend, kmeans_iters
        self.points_per_centroid, self.residual_init = points_per_centroid, residual_init
        self.reset_optimizer = reset_optimizer
        std = self.output_std / math.sqrt(2)  # two summed terms
        self.table0 = normal_init((n_chunks, self.rows, width), std, self.generator)
        self.table1 = normal_init((n_chunks, self.rows, width), std, self.generator)
        index = torch.randint(0, self.rows, (vocab, n_chunks), generator=self.generator)
        self.register_buffer("index", index.to(torch.int32))
        self.hash1 = UniversalHash(n_chunks, self.rows, self.generator)
        self.register_buffer("rounds", torch.zeros((), dtype=torch.int64))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        rows0 = self.index[ids].to(torch.int64)  # (N, c)
        return gather_chunks(self.table0, rows0) + gather_chunks(self.table1, self.hash1(ids))

    def config(self) -> dict:
        return {"rows": self.rows, "n_chunks": self.n_chunks}

    @torch.no_grad()
    def cluster(self) -> list[torch.nn.Parameter]:
        """One clustering round, steps (a)-(f) of the module docstring.

        Returns the parameters whose optimizer state the caller should reset.
        """
        c, rows, width = self.table0.shape
        device = self.table0.device
        round_ = int(self.rounds)
        old = _Snapshot(self)  # (a): every vector below is computed from this state

        n_sample = min(self.vocab, self.points_per_centroid * rows)
        sample = torch.stack([
            torch.randperm(self.vocab, generator=_gen(self.seed, round_, j, "sample"))[:n_sample]
            for j in range(c)
        ]).to(device)  # (c, n_sample)
        points = torch.stack([old.vectors(sample[j])[:, j] for j in range(c)])  # (c, n, w)
        k = min(rows, n_sample)
        centroids = kmeans(points, k, iters=self.kmeans_iters, seed=derive_seed(self.seed, round_),
                           backend=self.kmeans_backend)  # (c, k, w)  (b)

        for j in range(c):  # (d)
            self.hash1.redraw(j, _gen(self.seed, round_, j, "hash"))
        sums = torch.zeros(c, rows, width, device=device)
        counts = torch.zeros(c, rows, device=device)
        for start in range(0, self.vocab, _ID_BATCH):  # (c) and (e), all ids in batches
            ids = torch.arange(start, min(start + _ID_BATCH, self.vocab), device=device)
            v = old.vectors(ids).transpose(0, 1)  # (c, N, w)
            assign = nearest(v, centroids)  # (c, N)
            self.index[start:start + len(ids)] = assign.T.to(torch.int32)
            residual = v - torch.gather(centroids, 1, assign.unsqueeze(-1).expand(-1, -1, width))
            bucket = self.hash1(ids).T  # (c, N)
            sums.scatter_add_(1, bucket.unsqueeze(-1).expand(-1, -1, width), residual)
            counts.scatter_add_(1, bucket, torch.ones_like(bucket, dtype=counts.dtype))

        self.table0.zero_()
        self.table0[:, :k] = centroids
        if self.residual_init == "mean":
            self.table1.copy_(sums / counts.clamp(min=1).unsqueeze(-1))
        else:
            self.table1.zero_()
        self.rounds += 1
        return [self.table0, self.table1] if self.reset_optimizer else []


class _Snapshot:
    """The module's state before a clustering round, to compute v(i) for any id."""

    def __init__(self, module: CCEmbedding):
        self.table0 = module.table0.detach().clone()
        self.table1 = module.table1.detach().clone()
        self.index = module.index.clone()
        self.coefficients = module.hash1.coefficients.clone()
        self.rows = module.rows

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N,) -> (N, c, w): each chunk's vector under the old state."""
        c, _, width = self.table0.shape
        rows1 = universal_hash(ids, self.coefficients, self.rows)
        out = gather_chunks(self.table0, self.index[ids].to(torch.int64))
        out = out + gather_chunks(self.table1, rows1)
        return out.reshape(len(ids), c, width)


def _gen(*parts: object) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen
