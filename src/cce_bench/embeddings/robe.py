"""ROBE: Random Offset Block Embedding (Desai, Chou & Shrivastava, "Random Offset Block
Embedding (ROBE) for compressed embedding tables in deep learning recommendation systems",
MLSys 2022, arXiv:2108.02191).

All weights live in one circular array w of P values. Chunk j of id i is the w = dim / c
consecutive weights starting at a hashed offset, wrapping around the end of the array:
    e_j(i)[t] = w[(h_j(i) + t) mod P],   t = 0 .. dim/c - 1,     e(i) = concat_j e_j(i).
Budget: P = num_params exactly; at least dim weights (one whole embedding's worth, the hashing
trick's minimum), so one id's chunks need not overlap each other.
Stores c hash functions' coefficients (buffer, 4 int64 = 32 bytes each); nothing per id.
Shape: ids (*S) -> (*S, dim).

Departures: the paper's block size Z is free; here it is dim / n_chunks, so n_chunks = 1 is
ROBE-Z with Z = dim and n_chunks = dim is one hash per coordinate (HashedNets without signs).
The paper's optional random signs are left out, as in its main experiments.
"""

from __future__ import annotations

import torch

from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, chunk_dim, normal_init
from .hashing import UniversalHash
from .registry import register


def circular_positions(offsets: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """Positions of the windows of `width` <= `length` values starting at offsets (*S) in
    [0, length) of a circular array: (*S) -> (*S, width)."""
    pos = offsets.unsqueeze(-1) + torch.arange(width, device=offsets.device)
    # pos < 2 * length, so one conditional subtraction wraps it (int64 % is slow on CPUs).
    return torch.where(pos >= length, pos - length, pos)


def read_flat(array: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """array[positions] for a 1-d array, any shape of positions.

    index_select's backward is one index_add_ on every device; embedding()'s on a (P, 1) view,
    which lookup() uses on CPUs, was about 40x slower for these width-1 rows (2 CPU cores).
    """
    return array.index_select(0, positions.reshape(-1)).reshape(positions.shape)


@register("robe")
class RobeEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        self.n_chunks, self.width = n_chunks, chunk_dim("robe", dim, n_chunks)
        if num_params < dim:
            raise BudgetTooSmall("robe", num_params, dim, f"dim {dim}: one embedding's weights")
        self.size = num_params
        self.array = normal_init((num_params,), self.output_std, self.generator)
        self.hash = UniversalHash(n_chunks, num_params, self.generator)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        positions = circular_positions(self.hash(ids), self.width, self.size)  # (N, c, w)
        return read_flat(self.array, positions).reshape(len(ids), self.dim)

    def config(self) -> dict:
        return {"size": self.size, "n_chunks": self.n_chunks}
