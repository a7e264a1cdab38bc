"""HashedNets (Chen, Wilson, Tyree, Weinberger & Chen, "Compressing Neural Networks with the
Hashing Trick", ICML 2015, arXiv:1504.04788), applied to an embedding table.

Every coordinate of every id is one weight of a shared flat array w of P values, chosen by a
hash of the (id, coordinate) pair, times a random sign when `signed`:
    e(i)[k] = xi(i, k) * w[h(i, k)],   k < dim,
    h(i, k)  = ((a1 * hi + a2 * lo + a3 * k + b) mod p) mod P,
    xi(i, k) = 1 - 2 * (((a1' * hi + a2' * lo + a3' * k + b') mod p) mod 2),
with p = 2^31 - 1, i = hi * 2^30 + lo, and (a1, a2, a3, b), (a1', a2', a3', b') seeded draws.
This is the linear family of hashing.py over the triple (hi, lo, k), so two distinct
(id, coordinate) pairs collide with probability about 1/P; it is computed on the fly, with one
reduction mod p per id and one per coordinate.
Budget: P = num_params exactly; at least dim weights (one whole embedding's worth, the hashing
trick's minimum).
Stores the hash coefficients (4 int64 per hash, buffers); nothing per id.
Shape: ids (*S) -> (*S, dim).

Departures: the paper hashes with xxHash; a 2-universal family gives the same collision
probability per pair and runs vectorised on any device.
"""

from __future__ import annotations

import torch

from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, normal_init
from .hashing import PRIME
from .registry import register
from .robe import read_flat

_HALF_BITS = 30


def draw_pair_coefficients(generator: torch.Generator) -> torch.Tensor:
    """(a1, a2, a3, b) as a (4,) int64 tensor: a's in [1, p), b in [0, p)."""
    a = torch.randint(1, PRIME, (3,), generator=generator, dtype=torch.int64)
    b = torch.randint(0, PRIME, (1,), generator=generator, dtype=torch.int64)
    return torch.cat([a, b])


def pair_hash(ids: torch.Tensor, dim: int, coefficients: torch.Tensor) -> torch.Tensor:
    """((a1 hi + a2 lo + a3 k + b) mod p) for ids (N,) and k < dim: (N, dim) in [0, p)."""
    c = coefficients.to(ids.device)
    x = ids.to(torch.int64)
    base = (c[0] * (x >> _HALF_BITS) + c[1] * (x & ((1 << _HALF_BITS) - 1)) + c[3]) % PRIME  # (N,)
    per_coord = (c[2] * torch.arange(dim, device=ids.device)) % PRIME  # (dim,)
    h = base.unsqueeze(-1) + per_coord  # (N, dim), below 2p
    return torch.where(h >= PRIME, h - PRIME, h)


@register("hnet", "hashing", "every coordinate one hashed, signed weight of a flat array of P",
          "Chen et al., ICML 2015 (arXiv:1504.04788)")
class HashedNetEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, *,
                 signed: bool = True, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if num_params < dim:
            raise BudgetTooSmall("hnet", num_params, dim, f"dim {dim}: one embedding's weights")
        self.size, self.signed = num_params, signed
        self.weights = normal_init((num_params,), self.output_std, self.generator)
        self.register_buffer("index_coefficients", draw_pair_coefficients(self.generator))
        sign = draw_pair_coefficients(self.generator) if signed else None
        self.register_buffer("sign_coefficients", sign)

    def slots(self, ids: torch.Tensor) -> torch.Tensor:
        """h(i, k): ids (N,) -> (N, dim) positions in the weight array."""
        return pair_hash(ids, self.dim, self.index_coefficients) % self.size

    def signs(self, ids: torch.Tensor) -> torch.Tensor:
        """xi(i, k): ids (N,) -> (N, dim) of +-1."""
        return 1 - 2 * (pair_hash(ids, self.dim, self.sign_coefficients) & 1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        out = read_flat(self.weights, self.slots(ids))  # (N, dim)
        if self.signed:
            out = out * self.signs(ids).to(out.dtype)
        return out

    def config(self) -> dict:
        return {"size": self.size, "signed": self.signed}
