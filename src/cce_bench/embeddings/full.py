"""Full embedding table (the uncompressed baseline).

e(i) = T[i], T has vocab x dim values.
Budget: ignored; the true size vocab * dim is reported as the run's parameter count.
Stores nothing besides T.
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import torch

from .base import CompressedEmbedding, lookup, normal_init
from .registry import register


@register("full")
class FullEmbedding(CompressedEmbedding):
    uses_chunks = False  # n_chunks is ignored

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        self.table = normal_init((vocab, dim), self.output_std, self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return lookup(self.table, ids)

    def config(self) -> dict:
        return {"rows": self.vocab}
