"""Hash Embeddings (Svenstrup, Hansen & Winther, "Hash Embeddings for Efficient Word
Representations", NeurIPS 2017, arXiv:1709.03933).

An id picks c component vectors from a shared pool E of B rows by c hashes, and mixes them with
c importance weights read from a second hashed table W of K rows:
    e(i) = sum_{j < c} W[g(i)][j] * E[h_j(i)],   E: B x dim,  W: K x c,  c = n_chunks.
Budget: both pools share P. E gets half of it, W the rest:
    B = min(max(1, (P // 2) // dim), (P - c) // dim),   K = (P - B * dim) // c,
so B * dim + K * c <= P, less than c values unused. Since a row of W costs c values and a
row of E costs dim, W has about dim / c times as many rows as E: 8 at dim 32 and c = 4, near the
paper's advice that K be much larger than B. Smallest budget: dim + c (one row of each).
Stores c + 1 hash functions' coefficients (buffers, 4 int64 = 32 bytes each); nothing per id.
Shape: ids (*S) -> (*S, dim).

Departures: the paper's option of concatenating the importance weights to the output is left
out, so every method returns exactly dim values.

Init (a departure): importance weights start U(0, 1), positive, and components
N(0, 3 s^2 / c), s the common output scale, so that the sum of c products (E[w^2] = 1/3) has
standard deviation s. Zero-mean importance weights (N(0, 1) here before, U(-1, 1) in the
authors' code) give a shared component opposite signs in the ids that read it, so it cannot
move their logits the same way, and GMF, which has no bias term, hardly learns the base rate:
on syn-1000-300000 (base rate: val BCE 0.586) the best of 10 epochs was 0.595 / 0.690 / 0.654
at 16 / 64 / 256 ppd; with positive weights it is 0.584 / 0.582 / 0.579, within 0.01 of the
base rate after the first epoch (issue 11; docs/init.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import BudgetTooSmall, ConfigError
from .base import CompressedEmbedding, normal_init, summed_rows
from .hashing import UniversalHash
from .registry import register


def pool_sizes(num_params: int, dim: int, n_hashes: int) -> tuple[int, int]:
    """(B, K): rows of the component pool and of the importance table for a budget."""
    b = min(max(1, (num_params // 2) // dim), (num_params - n_hashes) // dim)
    k = (num_params - b * dim) // n_hashes if b >= 1 else 0
    return b, k


@register("hemb")
class HashEmbeddings(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if n_chunks < 1:
            raise ConfigError(f"hemb: n_chunks (hashes per id) must be at least 1, not {n_chunks}")
        self.n_hashes = n_chunks
        self.buckets, self.weight_rows = pool_sizes(num_params, dim, n_chunks)
        if self.buckets < 1 or self.weight_rows < 1:
            raise BudgetTooSmall("hemb", num_params, dim + n_chunks,
                                 f"dim {dim}, {n_chunks} hashes: one row of each pool")
        # U(0, 1) importance weights have E[w^2] = 1/3 (see the docstring).
        self.components = normal_init((self.buckets, dim),
                                      self.output_std * math.sqrt(3 / n_chunks), self.generator)
        self.importance = nn.Parameter(torch.rand((self.weight_rows, n_chunks),
                                                  generator=self.generator))
        self.component_hash = UniversalHash(n_chunks, self.buckets, self.generator)
        self.importance_hash = UniversalHash(1, self.weight_rows, self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return summed_rows(self.components, self.component_hash(ids), self.importance,
                           self.importance_hash(ids)[:, 0])

    def config(self) -> dict:
        return {"buckets": self.buckets, "weight_rows": self.weight_rows,
                "n_hashes": self.n_hashes}
