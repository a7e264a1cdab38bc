"""Bloom embeddings (Serrà & Karatzoglou, "Getting deep recommenders fit: Bloom embeddings for
sparse binary input/output networks", RecSys 2017, arXiv:1706.03993).

An id is encoded by c hashed positions (a Bloom filter's bits) and the encoding's linear map is
a table T, so the embedding is the sum of c hashed rows of one table:
    e(i) = sum_{j < c} T[h_j(i)],   T has rows x dim values, c = n_chunks.
Budget: rows = num_params // dim; at least one row (num_params >= dim).
Stores c hash functions' coefficients (buffer, 4 int64 = 32 bytes each).
Shape: ids (*S) -> (*S, dim).

Departures: when two of an id's hashes coincide the row is added twice, where the paper's
binary code would set the bit once; with rows >> c this is rare, and summing keeps the lookup a
plain gather.
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetTooSmall, ConfigError
from .base import CompressedEmbedding, normal_init, summed_rows
from .hashing import UniversalHash
from .registry import register


@register("bloom")
class BloomEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if n_chunks < 1:
            raise ConfigError(f"bloom: n_chunks (hashes per id) must be at least 1, not {n_chunks}")
        self.rows, self.n_hashes = num_params // dim, n_chunks
        if self.rows < 1:
            raise BudgetTooSmall("bloom", num_params, dim, f"dim {dim}: one row")
        std = self.output_std / math.sqrt(n_chunks)  # c summed terms
        self.table = normal_init((self.rows, dim), std, self.generator)
        self.hash = UniversalHash(n_chunks, self.rows, self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return summed_rows(self.table, self.hash(ids))

    def config(self) -> dict:
        return {"rows": self.rows, "n_hashes": self.n_hashes}
