"""Low-dimensional embeddings: a narrow table and a shared projection up to dim (the "low
dimensional" baseline of Tsang & Ahle, NeurIPS 2023, arXiv:2210.05974; a rank-r factorisation
of the table, as in Ginart et al.'s mixed-dimension embeddings, ISIT 2021, arXiv:1909.11810,
with a single dimension for all ids).

    e(i) = T[i] @ W,   T has vocab x r values, W has r x dim.
Budget: r = min(dim, num_params // (vocab + dim)), the largest rank that fits; params
r * (vocab + dim). Smallest budget: vocab + dim (rank 1).
Stores nothing besides T and W.
Shape: ids (*S) -> (*S, dim).

Departures: r stops at dim, since a rank above dim represents nothing a full vocab x dim table
cannot; a larger budget is left unused and the run reports what it used. T starts N(0, s) and W
N(0, 1 / r), s the common output scale: a sum of r products then has standard deviation s.
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, lookup, normal_init
from .registry import register


@register("ldim")
class LowDimensionalEmbedding(CompressedEmbedding):
    uses_chunks = False  # n_chunks is ignored

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        self.rank = min(dim, num_params // (vocab + dim))
        if self.rank < 1:
            raise BudgetTooSmall("ldim", num_params, vocab + dim,
                                 f"vocab {vocab}, dim {dim}: rank 1")
        self.table = normal_init((vocab, self.rank), self.output_std, self.generator)
        self.projection = normal_init((self.rank, dim), 1 / math.sqrt(self.rank), self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return lookup(self.table, ids) @ self.projection

    def config(self) -> dict:
        return {"rank": self.rank}
