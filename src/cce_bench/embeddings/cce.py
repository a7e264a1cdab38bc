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
cluster() is cluster_round() (steps (a) and (b)'s points: a k-means job) and its finish(centroids)
(steps (c)-(f)), so that a stack of runs can run every run's k-means in one batch (stacking.py).

Budget: rows = num_params // (2 * dim): per chunk two tables of rows x (dim / c) values.
Stores the index (vocab x c int32), the c hash functions (4 int64 each) and the round counter
(one int64; buffers).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetTooSmall, ConfigError
from ..kernels import take_rows
from .base import CompressedEmbedding, chunk_dim, gather_chunks, normal_init
from .hashing import UniversalHash, universal_hash
from .kmeans import KMeansJob, derive_seed, kmeans, nearest, resolve_backend
from .registry import register

_ID_BATCH = 1 << 18  # ids per batch when recomputing vectors over the whole vocabulary


@register("cce")
class CCEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, *,
                 kmeans_backend: str = "auto", kmeans_iters: int = 50,
                 points_per_centroid: int = 256, residual_init: str = "mean",
                 reset_optimizer: bool = True, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        self.n_chunks, self.width = n_chunks, chunk_dim(self.method_name, dim, n_chunks)
        if residual_init not in ("mean", "zero"):
            raise ConfigError(f"{self.method_name}: residual_init must be 'mean' or 'zero', "
                              f"not '{residual_init}'")
        resolve_backend(kmeans_backend, torch.device("cpu"))  # an unknown name fails here
        self.kmeans_backend, self.kmeans_iters = kmeans_backend, kmeans_iters
        self.points_per_centroid, self.residual_init = points_per_centroid, residual_init
        self.reset_optimizer = reset_optimizer
        std = self.output_std / math.sqrt(2)  # two summed terms
        self._make_tables(num_params, std)
        # Drawn as int32 directly: an int64 draw and a cast would double the peak memory.
        index = torch.randint(0, self.slots, (vocab, n_chunks), generator=self.generator,
                              dtype=torch.int32)
        self.register_buffer("index", index)
        self.hash1 = UniversalHash(n_chunks, self.slots, self.generator)
        self.register_buffer("rounds", torch.zeros((), dtype=torch.int64))

    # Seams for variants that lay the two tables out differently (cce_robe.py): how the tables
    # are made, read and written. Everything else, cluster() included, is shared.
    def _make_tables(self, num_params: int, std: float) -> None:
        """Set rows (k of the k-means), slots (range of the index and hash), table0, table1."""
        self.rows = num_params // (2 * self.dim)
        if self.rows < 1:
            raise BudgetTooSmall("cce", num_params, 2 * self.dim,
                                 f"dim {self.dim}: two rows of each table")
        self.slots = self.rows
        shape = (self.n_chunks, self.rows, self.width)
        self.table0 = normal_init(shape, std, self.generator)
        self.table1 = normal_init(shape, std, self.generator)

    def _read(self, table: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Chunk j of each id from its slot: slots (N, c) -> (N, c * w)."""
        return gather_chunks(table, slots)

    def _scatter_add(self, target: torch.Tensor, slots: torch.Tensor, values: torch.Tensor) -> None:
        """The adjoint of _read: add values (c, N, w) into target (a table's shape) at slots (c, N)."""
        target.scatter_add_(1, slots.unsqueeze(-1).expand_as(values), values)

    def _store_centroids(self, centroids: torch.Tensor) -> None:
        """table0 := centroids (c, k, w), k <= rows; the rows beyond k are zeroed."""
        self.table0.zero_()
        self.table0[:, :centroids.shape[1]] = centroids

    def _slot_of_centroid(self, assign: torch.Tensor) -> torch.Tensor:
        """The index value that reads back centroid `assign` after _store_centroids."""
        return assign

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        slots0 = take_rows(self.index, ids).to(torch.int64)  # (N, c)
        return self._read(self.table0, slots0) + self._read(self.table1, self.hash1(ids))

    def config(self) -> dict:
        return {"rows": self.rows, "n_chunks": self.n_chunks}

    @torch.no_grad()
    def cluster(self) -> list[torch.nn.Parameter]:
        """One clustering round, steps (a)-(f) of the module docstring.

        Returns the parameters whose optimizer state the caller should reset.
        """
        round_ = self.cluster_round()
        job = round_.job
        return round_.finish(kmeans(job.points, job.k, iters=job.iters, seed=job.seed,
                                    backend=job.backend))  # (b)

    @torch.no_grad()
    def cluster_round(self) -> ClusterRound:
        """A clustering round up to its k-means: the round's KMeansJob, whose centroids the
        round's finish() takes. Nothing of the module changes until finish()."""
        c, rows = self.n_chunks, self.rows
        device = self.table0.device
        round_ = int(self.rounds)
        old = _Snapshot(self)  # (a): every vector below is computed from this state

        n_sample = min(self.vocab, self.points_per_centroid * rows)
        sample = torch.stack([
            torch.randperm(self.vocab, generator=_gen(self.seed, round_, j, "sample"))[:n_sample]
            for j in range(c)
        ]).to(device)  # (c, n_sample)
        # Chunk j's points are chunk j of its sample's vectors: one vectors() call for all.
        vectors = old.vectors(sample.reshape(-1)).view(c, n_sample, c, self.width)
        points = vectors.diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()  # (c, n, w)
        job = KMeansJob(points, min(rows, n_sample), self.kmeans_iters,
                        derive_seed(self.seed, round_), self.kmeans_backend)
        return ClusterRound(self, old, round_, job)

    def _finish_round(self, old: _Snapshot, round_: int,
                      centroids: torch.Tensor) -> list[torch.nn.Parameter]:
        """Steps (c)-(f) from the round's k-means centroids (c, k, w)."""
        c, width, device = self.n_chunks, self.width, self.table0.device
        self.hash1.redraw([_gen(self.seed, round_, j, "hash") for j in range(c)])  # (d)
        # Per weight of table1: the sum of the residual coordinates that read it, and their count.
        sums, counts = torch.zeros_like(self.table1), torch.zeros_like(self.table1)
        for start in range(0, self.vocab, _ID_BATCH):  # (c) and (e), all ids in batches
            ids = torch.arange(start, min(start + _ID_BATCH, self.vocab), device=device)
            v = old.vectors(ids).transpose(0, 1)  # (c, N, w)
            assign = nearest(v, centroids)  # (c, N)
            self.index[start:start + len(ids)] = self._slot_of_centroid(assign).T.to(torch.int32)
            residual = v - torch.gather(centroids, 1, assign.unsqueeze(-1).expand(-1, -1, width))
            bucket = self.hash1(ids).T  # (c, N)
            self._scatter_add(sums, bucket, residual)
            self._scatter_add(counts, bucket, torch.ones_like(residual))

        self._store_centroids(centroids)
        if self.residual_init == "mean":
            self.table1.copy_(sums / counts.clamp(min=1))
        else:
            self.table1.zero_()
        self.rounds += 1
        return [self.table0, self.table1] if self.reset_optimizer else []


class ClusterRound:
    """One clustering round of a CCE module, its k-means apart: `job` is the k-means to run,
    alone or batched with other rounds' (kmeans_many); finish(centroids) completes the round
    (steps (c)-(f)) from the state it started from. Finish a round once, before anything else
    changes the module."""

    def __init__(self, module: CCEmbedding, old: _Snapshot, round_: int, job: KMeansJob):
        self.module, self.old, self.round, self.job = module, old, round_, job

    @torch.no_grad()
    def finish(self, centroids: torch.Tensor) -> list[torch.nn.Parameter]:
        """Steps (c)-(f) from the job's centroids (c, k, w); returns the parameters whose
        optimizer state the caller should reset."""
        return self.module._finish_round(self.old, self.round, centroids)


class _Snapshot:
    """The module's state before a clustering round, to compute v(i) for any id."""

    def __init__(self, module: CCEmbedding):
        self.table0 = module.table0.detach().clone()
        self.table1 = module.table1.detach().clone()
        self.index = module.index.clone()
        self.coefficients = module.hash1.coefficients.clone()
        self.slots, self.read = module.slots, module._read
        self.n_chunks, self.width = module.n_chunks, module.width

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N,) -> (N, c, w): each chunk's vector under the old state."""
        slots1 = universal_hash(ids, self.coefficients, self.slots)
        out = self.read(self.table0, take_rows(self.index, ids).to(torch.int64))
        out = out + self.read(self.table1, slots1)
        return out.reshape(len(ids), self.n_chunks, self.width)


def _gen(*parts: object) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen
