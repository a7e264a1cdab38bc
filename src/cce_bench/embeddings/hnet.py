"""HashedNets (Chen, Wilson, Tyree, Weinberger & Chen, "Compressing Neural Networks with the
Hashing Trick", ICML 2015, arXiv:1504.04788), applied to an embedding table.

Every coordinate of every id is one weight of a shared flat array w of P values, chosen by a
hash of the (id, coordinate) pair, times a random sign when `signed`:
    e(i)[k] = xi(i, k) * w[h(i, k)],   k < dim,
    h(i, k)  = u(i * dim + k) mod P,   xi(i, k) = 1 - 2 * (u'(i * dim + k) mod 2),
with u, u' two seeded functions of hashing.py's family before its range reduction (values in
[0, p)). The pair is packed into one key, i * dim + k, distinct for distinct pairs while
i < 2^63 / dim (2^56 at dim 128), and the key goes through hashing.py's 64-bit mixer, so the dim
slots of an id are scattered independently of each other and of every other id's: two ids
share about dim^2 / P weights, as under uniform slots. (A hash linear in i and k, as this one
was, gives each id's slots as an arithmetic progression: a pair of ids that shares one weight
shares most of them. Over 100 seeds on 500 ids, dim 8, P = 2048, pairs of ids sharing two or
more weights were 15.6x as many as under uniform slots, and some shared all 8.)
Budget: P = num_params exactly; at least dim weights (one whole embedding's worth, the hashing
trick's minimum).
Stores the hash coefficients (4 int64 per hash: one hash, two when signed; buffers); nothing
per id.
Shape: ids (*S) -> (*S, dim).

Unsigned by default, as the authors ran it (Tsang & Ahle's hnet has no signs); `signed=True`
gives the HashedNets paper's variant. Why: GMF's logit <e(u), e(v)> has no bias term, so the
base rate (the share of positives) must come from user and item vectors that agree on average.
A shared weight that a random sign flips for half of the ids that read it cannot move their
logits the same way, so the signed variant learns the base rate slowly or not at all: best
validation BCE 0.689 / 0.671 / 0.590 at 16 / 64 / 256 parameters per dimension on
syn-1000-300000, against 0.586 / 0.582 / 0.582 unsigned (issue 11's audit).

Departures: the paper hashes with xxHash; hashing.py's family gives the same collision
probability per pair and runs vectorised on any device.
"""

from __future__ import annotations

import torch

from .. import kernels
from ..errors import BudgetTooSmall
from .base import CompressedEmbedding, normal_init
from .hashing import draw_coefficients, hash_mod_prime
from .registry import register
from .robe import ProgramRead, read_flat


def pair_keys(ids: torch.Tensor, dim: int) -> torch.Tensor:
    """i * dim + k for ids (N,) and k < dim: (N, dim) int64, one key per (id, coordinate)."""
    k = torch.arange(dim, device=ids.device)
    return ids.to(torch.int64).unsqueeze(-1) * dim + k  # (N, dim)


def pair_hash(ids: torch.Tensor, dim: int, coefficients: torch.Tensor) -> torch.Tensor:
    """u(i * dim + k) for ids (N,), k < dim and one function (4,): (N, dim) in [0, p)."""
    return hash_mod_prime(pair_keys(ids, dim), coefficients.unsqueeze(0))[..., 0]


def member_slots(ids: torch.Tensor, dim: int, coefficients: torch.Tensor,
                 sign_coefficients: torch.Tensor | None,
                 sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Member r's h_r(i, k) in [0, sizes[r]) for ids (R, N) by coefficients (R, 4): (R, N, dim)
    int64, and the signs xi_r(i, k) (+-1) when sign_coefficients, in torch."""
    keys = pair_keys(ids, dim)  # (R, N, dim)
    slots = hash_mod_prime(keys, coefficients.view(-1, 1, 1, 1, 4))[..., 0] % sizes.view(-1, 1, 1)
    if sign_coefficients is None:
        return slots, None
    return slots, 1 - 2 * (hash_mod_prime(keys, sign_coefficients.view(-1, 1, 1, 1, 4))[..., 0] & 1)


def read_hashed(weights: torch.Tensor, ids: torch.Tensor, coefficients: torch.Tensor,
                sign_coefficients: torch.Tensor | None, sizes: torch.Tensor, base: torch.Tensor,
                dim: int) -> torch.Tensor:
    """Member r's e(i)[k] = xi_r(i, k) * w[base[r] + h_r(i, k)] for ids (R, N), with the
    functions coefficients (R, 4) (and sign_coefficients, signed) into [0, sizes[r]) -> (R, N,
    dim). On CUDA one program hashes and reads (kernels.read_pairs); elsewhere torch computes
    every key's hash into memory and index_select reads it."""
    def positions():
        slots, signs = member_slots(ids, dim, coefficients, sign_coefficients, sizes)
        return slots + base.view(-1, 1, 1), signs

    # The signed read is left to torch on CUDA: its program matched torch in Triton's
    # interpreter but not on an H200 (not yet found why); the authors' hnet is unsigned.
    if sign_coefficients is not None or not kernels.takes_flat(weights, "read_pairs"):
        at, signs = positions()
        out = read_flat(weights, at)
        return out if signs is None else out * signs.to(out.dtype)
    return ProgramRead.apply(
        weights, lambda w: kernels.read_pairs(w, ids, coefficients, sign_coefficients, sizes,
                                              base, dim),
        lambda target, grad: kernels.add_pairs(target, ids, coefficients, sign_coefficients,
                                               sizes, base, grad), positions)


@register("hnet")
class HashedNetEmbedding(CompressedEmbedding):
    uses_chunks = False  # n_chunks is ignored

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, *,
                 signed: bool = False, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if num_params < dim:
            raise BudgetTooSmall("hnet", num_params, dim, f"dim {dim}: one embedding's weights")
        self.size, self.signed = num_params, signed
        self.weights = normal_init((num_params,), self.output_std, self.generator)
        self.register_buffer("index_coefficients", draw_coefficients(1, self.generator)[0])
        sign = draw_coefficients(1, self.generator)[0] if signed else None
        self.register_buffer("sign_coefficients", sign)

    def slots(self, ids: torch.Tensor) -> torch.Tensor:
        """h(i, k): ids (N,) -> (N, dim) positions in the weight array."""
        return pair_hash(ids, self.dim, self.index_coefficients) % self.size

    def signs(self, ids: torch.Tensor) -> torch.Tensor:
        """xi(i, k): ids (N,) -> (N, dim) of +-1."""
        return 1 - 2 * (pair_hash(ids, self.dim, self.sign_coefficients) & 1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.signed and kernels.takes_flat(self.weights, "read_pairs"):  # one member
            return read_hashed(self.weights, ids.view(1, -1), self.index_coefficients.view(1, 4),
                               None, ids.new_full((1,), self.size, dtype=torch.int64),
                               ids.new_zeros(1, dtype=torch.int64), self.dim)[0]
        out = read_flat(self.weights, self.slots(ids))  # (N, dim)
        if self.signed:
            out = out * self.signs(ids).to(out.dtype)
        return out

    def config(self) -> dict:
        return {"size": self.size, "signed": self.signed}
