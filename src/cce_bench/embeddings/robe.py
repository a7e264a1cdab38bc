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

from collections.abc import Callable

import torch

from .. import kernels
from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, chunk_dim, normal_init
from .hashing import UniversalHash
from .registry import register


def circular_positions(offsets: torch.Tensor, width: int,
                       length: int | torch.Tensor) -> torch.Tensor:
    """Positions of the windows of `width` <= `length` values starting at offsets (*S) in
    [0, length) of a circular array: (*S) -> (*S, width); length may be a tensor that
    broadcasts against (*S, width)."""
    pos = offsets.unsqueeze(-1) + torch.arange(width, device=offsets.device)
    # pos < 2 * length, so one conditional subtraction wraps it (int64 % is slow on CPUs).
    return torch.where(pos >= length, pos - length, pos)


def read_flat(array: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """array[positions] for a 1-d array, any shape of positions.

    index_select's backward is one index_add_ on every device; embedding()'s on a (P, 1) view,
    which lookup() uses on CPUs, was about 40x slower for these width-1 rows (2 CPU cores).
    """
    return array.index_select(0, positions.reshape(-1)).reshape(positions.shape)


Positions = Callable[[], tuple[torch.Tensor, "torch.Tensor | None"]]


class ProgramRead(torch.autograd.Function):
    """A 1-d array read by a Triton program that computes its positions itself (kernels:
    read_windows here, read_pairs for hnet): read(array) -> values or None, add(target, grad)
    -> bool its backward. Where a program cannot launch, positions() gives torch's positions
    (and signs) for array[positions] and its index_add_."""

    @staticmethod
    def forward(ctx, array: torch.Tensor, read: Callable, add: Callable,
                positions: Positions) -> torch.Tensor:
        ctx.add, ctx.positions, ctx.length = add, positions, array.shape[0]
        values = read(array)
        if values is None:
            at, signs = positions()
            values = array[at] if signs is None else array[at] * signs.to(array.dtype)
        return values

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        target = grad.new_zeros(ctx.length)
        if not ctx.add(target, grad):
            at, signs = ctx.positions()
            grad = grad if signs is None else grad * signs.to(grad.dtype)
            target.index_add_(0, at.reshape(-1), grad.reshape(-1))
        return target, None, None, None


def read_windows(array: torch.Tensor, slots: torch.Tensor, lengths: torch.Tensor,
                 base: torch.Tensor, width: int) -> torch.Tensor:
    """Windows of `width` values of the 1-d array at slots (R, N, c): member r's window of chunk
    j at slot s is base[r, j] + (s + t) mod lengths[r], t < width -> (R, N, c, width).
    On CUDA one program reads them (kernels.read_windows); elsewhere index_select reads the
    positions torch computes."""
    def positions():
        r = lengths.shape[0]
        at = circular_positions(slots, width, lengths.view(r, 1, 1, 1))
        return at + base.view(r, 1, -1, 1), None

    if not kernels.takes_flat(array, "read_windows"):
        return read_flat(array, positions()[0])
    return ProgramRead.apply(
        array, lambda a: kernels.read_windows(a, slots, lengths, base, width),
        lambda target, grad: kernels.add_windows(target, slots, lengths, base, grad), positions)


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
        slots = self.hash(ids).unsqueeze(0)  # (1, N, c): one member
        windows = read_windows(self.array, slots, ids.new_full((1,), self.size),
                               ids.new_zeros(1, self.n_chunks), self.width)
        return windows.reshape(len(ids), self.dim)

    def config(self) -> dict:
        return {"size": self.size, "n_chunks": self.n_chunks}
