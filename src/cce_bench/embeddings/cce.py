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
Both are prepare_rounds and finish_rounds of one module: a stack calls them for all its tables
at once, with the stack's forward reading every table's vectors in one call, and one scatter of
the residuals into all tables' sums; each table then writes its own RoundUpdate.

Budget: rows = num_params // (2 * dim): per chunk two tables of rows x (dim / c) values.
Stores the index (vocab x c int32), the c hash functions (4 int64 each) and the round counter
(one int64; buffers).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import BudgetTooSmall, ConfigError
from ..kernels import take_rows
from .base import CompressedEmbedding, chunk_dim, gather_chunks, normal_init
from .hashing import UniversalHash, draw_coefficients, hash_members
from .kmeans import (KMeansJob, batch_cost, derive_seed, kmeans, nearest, padded_centroids,
                     plan_batches, resolve_backend)
from .registry import register

# Vectors a round computes at once, members x ids x dim floats (64 MB): ids go in batches.
_ROUND_ELEMENTS = 1 << 24

Reader = Callable[[torch.Tensor], torch.Tensor]
"""ids (R, N) -> (R, N, dim): the current embeddings of R modules, row r by module r (a
module's own embed, or a stack of modules' forward)."""


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

    def _positions(self, slots: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Where _read reads slots (R, c, N) in flat table1s of R modules of this class whose
        chunks hold lengths (R, 1, 1) slots (table1.shape[1]): (R, c, N, w) positions, each in
        its own table."""
        chunk = torch.arange(self.n_chunks, device=slots.device).view(1, -1, 1)
        rows = (chunk * lengths + slots) * self.width
        return rows.unsqueeze(-1) + torch.arange(self.width, device=slots.device)

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
        return prepare_rounds([self], self.read_own)[0]

    def read_own(self, ids: torch.Tensor) -> torch.Tensor:
        """This module as a Reader of one: ids (1, N) -> (1, N, dim)."""
        return self.embed(ids.reshape(-1)).view(*ids.shape, self.dim)


class ClusterRound:
    """One clustering round of a CCE module, its k-means apart: `job` is the k-means to run,
    alone or batched with other rounds' (kmeans_many); finish(centroids) completes the round
    (steps (c)-(f)). Finish a round once, before anything else changes the module (its
    vectors are read again then)."""

    def __init__(self, module: CCEmbedding, round_: int, job: KMeansJob):
        self.module, self.round, self.job = module, round_, job

    @torch.no_grad()
    def finish(self, centroids: torch.Tensor) -> list[torch.nn.Parameter]:
        """Steps (c)-(f) from the job's centroids (c, k, w); returns the parameters whose
        optimizer state the caller should reset."""
        return finish_rounds([self], [centroids], self.module.read_own)[0].apply()


class RoundUpdate:
    """What one module's clustering round writes, computed by finish_rounds: apply() writes
    it (steps (c)-(e)) and returns the parameters whose optimizer state to reset (f)."""

    def __init__(self, module: CCEmbedding, centroids: torch.Tensor, index: torch.Tensor,
                 table1: torch.Tensor, coefficients: torch.Tensor):
        self.module, self.centroids, self.index = module, centroids, index
        self.table1, self.coefficients = table1, coefficients

    @torch.no_grad()
    def apply(self) -> list[torch.nn.Parameter]:
        m = self.module
        m.hash1.coefficients.copy_(self.coefficients)  # (d)
        m.index.copy_(self.index)  # (c)
        m._store_centroids(self.centroids)
        if m.residual_init == "mean":  # (e)
            m.table1.copy_(self.table1)
        else:
            m.table1.zero_()
        m.rounds += 1
        return [m.table0, m.table1] if m.reset_optimizer else []


@torch.no_grad()
def prepare_rounds(modules: list[CCEmbedding], read: Reader) -> list[ClusterRound]:
    """The clustering round of each of several modules up to its k-means, steps (a) and (b)'s
    points, as each module's cluster_round(): modules of one class, vocabulary, chunks and
    width, whose current embeddings `read` gives. Nothing of the modules changes."""
    first = modules[0]
    c, width, device = first.n_chunks, first.width, first.table0.device
    numbers = torch.stack([m.rounds for m in modules]).tolist()  # one host sync for all
    samples = [torch.stack([  # on the host, one copy to the device for all modules below
        torch.randperm(m.vocab, generator=_gen(m.seed, round_, j, "sample"))[:n_sample(m)]
        for j in range(c)]) for m, round_ in zip(modules, numbers)]  # (c, n) each
    n_max = max(sample.shape[1] for sample in samples)
    ids = torch.stack([F.pad(sample, (0, n_max - sample.shape[1])) for sample in samples])
    points = _chunk_points(read, ids.to(device), width)  # (R, c, n_max, w)
    return [ClusterRound(m, round_, KMeansJob(
                points[r, :, :sample.shape[1]].contiguous(), min(m.rows, sample.shape[1]),
                m.kmeans_iters, derive_seed(m.seed, round_), m.kmeans_backend))
            for r, (m, round_, sample) in enumerate(zip(modules, numbers, samples))]


def n_sample(module: CCEmbedding) -> int:
    """Ids a round's k-means clusters, each chunk's own uniform sample (step (b))."""
    return min(module.vocab, module.points_per_centroid * module.rows)


def _chunk_points(read: Reader, ids: torch.Tensor, width: int) -> torch.Tensor:
    """Chunk j of the vectors of ids[:, j]: ids (R, c, n) -> (R, c, n, w), read in batches of
    columns (_ROUND_ELEMENTS)."""
    size, c, n = ids.shape
    flat = ids.view(size, c * n)
    chunk = torch.arange(c, device=ids.device).repeat_interleave(n)  # each column's chunk
    out = torch.empty(size, c * n, width, device=ids.device)
    step = max(1, _ROUND_ELEMENTS // (size * c * width))
    for start in range(0, c * n, step):
        v = read(flat[:, start:start + step])  # (R, s, c * w)
        pick = chunk[start:start + step].view(1, -1, 1, 1).expand(size, -1, 1, width)
        out[:, start:start + step] = v.view(size, -1, c, width).gather(2, pick).squeeze(2)
    return out.view(size, c, n, width)


@torch.no_grad()
def finish_rounds(rounds: list[ClusterRound], centroids: list[torch.Tensor],
                  read: Reader) -> list[RoundUpdate]:
    """Steps (c)-(e) of each of prepare_rounds' rounds from its k-means centroids (c, k, w),
    computed for all modules at once from their current state (`read`) before any of them
    changes: what each round writes (RoundUpdate.apply())."""
    modules = [r.module for r in rounds]
    first = modules[0]
    c, width, vocab, device = first.n_chunks, first.width, first.vocab, first.table0.device
    size = len(modules)
    # (d): each module's fresh hash per chunk, drawn as it alone draws them; one copy for all.
    coefficients = torch.stack([torch.cat([
        draw_coefficients(1, _gen(m.seed, r.round, j, "hash")) for j in range(c)])
        for m, r in zip(modules, rounds)]).to(device)  # (R, c, 4)
    moduli = torch.tensor([m.slots for m in modules], device=device)
    lengths = torch.tensor([m.table1.shape[1] for m in modules], device=device).view(-1, 1, 1)
    sizes = [m.table1.numel() for m in modules]
    starts = torch.tensor([0] + sizes[:-1], device=device).cumsum(0).view(-1, 1, 1, 1)
    # Per weight of every table1: the sum of the residual coordinates that read it, and
    # their count; each module's weights at its start.
    sums = torch.zeros(sum(sizes), device=device)
    counts = torch.zeros(sum(sizes), device=device)
    index = torch.empty(size, vocab, c, dtype=torch.int32, device=device)
    batches = _centroid_batches(centroids, vocab, device)
    step = max(1, _ROUND_ELEMENTS // (size * c * width))
    for start in range(0, vocab, step):  # (c) and (e), all ids in batches
        ids = torch.arange(start, min(start + step, vocab), device=device).expand(size, -1)
        n = ids.shape[1]
        v = read(ids).view(size, n, c, width).transpose(1, 2)  # (R, c, N, w)
        assign = torch.empty(size, c, n, dtype=torch.int64, device=device)
        chosen = torch.empty(size, c, n, width, device=device)  # each vector's centroid
        for members, padded, bias in batches:
            a = nearest(v[members].reshape(-1, n, width), padded, bias)  # (B c, N)
            assign[members] = a.view(-1, c, n)
            chosen[members] = torch.gather(padded, 1, a.unsqueeze(-1).expand(-1, -1, width)
                                           ).view(-1, c, n, width)
        index[:, start:start + n] = first._slot_of_centroid(assign).transpose(1, 2).to(
            torch.int32)
        bucket = hash_members(ids, coefficients, moduli).transpose(1, 2)  # (R, c, N)
        positions = (first._positions(bucket, lengths) + starts).reshape(-1)
        residual = (v - chosen).reshape(-1)
        sums.index_add_(0, positions, residual)
        counts.index_add_(0, positions, torch.ones_like(residual))
    table1 = (sums / counts.clamp(min=1)).split(sizes)
    return [RoundUpdate(m, k, index[r], table1[r].view(m.table1.shape), coefficients[r])
            for r, (m, k) in enumerate(zip(modules, centroids))]


def _centroid_batches(centroids: list[torch.Tensor], vocab: int, device: torch.device
                      ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """The modules' centroids (c, k, w) in batches for nearest(), grouped by k as k-means'
    batches are (plan_batches): (the batch's modules (B,), their centroids padded to the
    largest k (B c, k, w), nearest()'s bias (inf on padding) or None)."""
    shapes = [(k.shape[0], vocab, k.shape[1]) for k in centroids]
    out = []
    for batch in plan_batches(shapes, batch_cost(device)):
        padded, bias = padded_centroids([centroids[i] for i in batch])
        out.append((torch.tensor(batch, device=device), padded, bias))
    return out


def _gen(*parts: object) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen
