"""Hashing trick (Weinberger et al., "Feature Hashing for Large Scale Multitask Learning",
ICML 2009; arXiv:0902.2206).

e(i) = T[h(i)], T has rows x dim values, h one universal hash (see hashing.py).
Budget: rows = num_params // dim; at least one row (num_params >= dim).
Stores one hash function's coefficients (buffer, 4 int64 = 32 bytes).
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import torch

from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, lookup, normal_init
from .hashing import UniversalHash
from .registry import register


@register("hash")
class HashEmbedding(CompressedEmbedding):
    uses_chunks = False  # n_chunks is ignored

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        self.rows = num_params // dim
        if self.rows < 1:
            raise BudgetTooSmall("hash", num_params, dim, f"dim {dim}")
        self.table = normal_init((self.rows, dim), self.output_std, self.generator)
        self.hash = UniversalHash(1, self.rows, self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return lookup(self.table, self.hash(ids)[:, 0])

    def config(self) -> dict:
        return {"rows": self.rows}
