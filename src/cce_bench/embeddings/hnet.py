"""HashedNets (Chen, Wilson, Tyree, Weinberger & Chen, "Compressing Neural Networks with the
Hashing Trick", ICML 2015, arXiv:1504.04788), applied to an embedding table.

Every coordinate of every id is one weight of a shared flat array w of P values, chosen by a
hash of the (id, coordinate) pair, times a random sign when `signed`:
    e(i)[k] = xi(i, k) * w[h(i, k)],   h(i, k) in [0, P),  xi(i, k) in {-1, +1},  k < dim.
h and xi are two universal hashes of the key i * dim + k (hashing.py covers keys below 2^60, so
any id below 2^31 with dim below 2^29), computed on the fly.
Budget: P = num_params exactly; at least dim weights (one whole embedding's worth, the hashing
trick's minimum).
Stores one or two hash functions' coefficients (buffers); nothing per id.
Shape: ids (*S) -> (*S, dim).

Departures: the paper hashes with xxHash; a 2-universal family gives the same collision
probability 1/P per pair of keys and runs vectorised on any device.
"""

from __future__ import annotations

import torch

from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, normal_init
from .hashing import UniversalHash
from .registry import register


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
        self.hash = UniversalHash(1, num_params, self.generator)
        self.sign_hash = UniversalHash(1, 2, self.generator) if signed else None

    def keys(self, ids: torch.Tensor) -> torch.Tensor:
        """The hashed key of each (id, coordinate): ids (N,) -> (N, dim)."""
        coords = torch.arange(self.dim, device=ids.device)
        return ids.to(torch.int64).unsqueeze(-1) * self.dim + coords

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        keys = self.keys(ids)
        out = self.weights[self.hash(keys)[..., 0]]  # (N, dim)
        if self.sign_hash is not None:
            out = out * (2 * self.sign_hash(keys)[..., 0] - 1).to(out.dtype)
        return out

    def config(self) -> dict:
        return {"size": self.size, "signed": self.signed}
