"""Compositional embeddings by concatenation (Shi et al., "Compositional Embeddings Using
Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020,
arXiv:1909.02107; the hashed, concatenated variant used as "CE" by Tsang & Ahle 2023).

e(i) = concat_j T_j[h_j(i)] for chunks j = 1..c, each T_j has rows x (dim / c) values and
h_j is chunk j's own universal hash.
Budget: rows = num_params // dim (all c tables together hold rows x dim values).
Stores c hash functions' coefficients (buffer, 4 int64 = 32 bytes each).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import torch

from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, chunk_dim, gather_chunks, normal_init
from .hashing import UniversalHash
from .registry import register


@register("ce")
class CompositionalEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        width = chunk_dim("ce", dim, n_chunks)
        self.rows = num_params // dim
        if self.rows < 1:
            raise BudgetTooSmall("ce", num_params, dim, f"dim {dim}")
        self.n_chunks = n_chunks
        self.table = normal_init((n_chunks, self.rows, width), self.output_std, self.generator)
        self.hash = UniversalHash(n_chunks, self.rows, self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return gather_chunks(self.table, self.hash(ids))

    def config(self) -> dict:
        return {"rows": self.rows, "n_chunks": self.n_chunks}
