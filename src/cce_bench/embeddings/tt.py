"""TT-Rec: the embedding table as a tensor train (Yin, Acun, Wu, Liu and Chen, "TT-Rec: Tensor
Train Compression for Deep Learning Recommendation Model Embeddings", MLSys 2021,
arXiv:2101.11714).

The vocabulary is factored as n_1 x ... x n_c >= vocab and the dimension as d = d_1 x ... x d_c.
An id i has the mixed-radix digits (i_1, ..., i_c), an output coordinate j the digits
(j_1, ..., j_c), and
    e(i)[j] = G_1[i_1, :, j_1, :] G_2[i_2, :, j_2, :] ... G_c[i_c, :, j_c, :],
a product of matrices: core G_k has shape (n_k, R_{k-1}, d_k, R_k), with R_0 = R_c = 1 and
every inner rank R_k = R. The forward pass gathers each id's c slices and contracts them left
to right with batched matrix products: (N, d_1...d_k, R) x (N, R, d_{k+1} R) per step.

Factorisation rule: n_k are the c near-equal integers, from floor(vocab^(1/c)) up, whose
product first reaches vocab; d_k spread d's prime factors, largest first, over the smallest
factor so far. Cores pair the largest n_k with the largest d_k, and the two largest cores sit
at the ends, where they cost R rather than R^2 values.
Budget: params(R) = R (a_1 + a_c) + R^2 (a_2 + ... + a_{c-1}) with a_k = n_k d_k; R is the
largest rank with params(R) <= num_params, capped where a larger uniform rank adds nothing
(R <= max_k min(a_1...a_k, a_{k+1}...a_c), the rank of an unconstrained table at the widest
bond). The smallest budget is params(1) = a_1 + ... + a_c. With n_chunks = 1 the train is one
core, the plain vocab x dim table.
Stores nothing besides the cores: the digits are computed from the id.
Init: every core entry is N(0, s^2) with s^(2c) R^(c-1) = output_std^2, so each entry of the
implied table, a sum of R^(c-1) products of c independent entries, has the target variance
(TT-Rec's Gaussian initialisation of the cores).
Departures: none in the decomposition. TT-Rec also caches frequent rows; not done here, since
the cache is a speed device that changes nothing the budget counts.
Shape: ids (*S) -> (*S, dim).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import BudgetTooSmall, ConfigError
from .base import CompressedEmbedding, lookup
from .registry import register


def factor_vocab(vocab: int, c: int) -> list[int]:
    """c near-equal integers whose product is the first to reach vocab, largest first."""
    base = max(1, int(round(vocab ** (1 / c))))
    while base > 1 and base ** c > vocab:
        base -= 1
    while (base + 1) ** c <= vocab:
        base += 1
    factors = [base] * c
    for i in range(c):  # (base + 1)^c > vocab, so at most c steps
        if math.prod(factors) >= vocab:
            break
        factors[i] += 1
    return sorted(factors, reverse=True)


def factor_dim(dim: int, c: int) -> list[int]:
    """c integers whose product is dim, as equal as d's prime factors allow, largest first."""
    primes, rest, p = [], dim, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    factors = [1] * c
    for prime in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= prime
    return sorted(factors, reverse=True)


def core_layout(vocab: int, dim: int, c: int) -> list[tuple[int, int]]:
    """(n_k, d_k) per core, the two largest cores at the ends."""
    pairs = list(zip(factor_vocab(vocab, c), factor_dim(dim, c)))  # largest first
    return pairs if c < 3 else [pairs[0], *pairs[2:], pairs[1]]


def tt_params(layout: list[tuple[int, int]], rank: int) -> int:
    ranks = [1] + [rank] * (len(layout) - 1) + [1]
    return sum(ranks[k] * n * d * ranks[k + 1] for k, (n, d) in enumerate(layout))


def useful_rank(layout: list[tuple[int, int]]) -> int:
    """Largest uniform rank that can still add anything: the widest bond's full rank."""
    sizes = [n * d for n, d in layout]
    bonds = [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))]
    return max(bonds, default=1)


@register("tt", "tensor-train", "the table as a tensor train of n_chunks cores, largest rank that fits",
          "Yin et al., MLSys 2021 (arXiv:2101.11714)")
class TensorTrainEmbedding(CompressedEmbedding):
    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 4, **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if n_chunks < 1:
            raise ConfigError(f"tt: n_chunks (cores) must be at least 1, not {n_chunks}")
        self.layout = core_layout(vocab, dim, n_chunks)
        minimum = tt_params(self.layout, 1)
        if num_params < minimum:
            shape = " x ".join(f"{n}x{d}" for n, d in self.layout)
            raise BudgetTooSmall("tt", num_params, minimum,
                                 f"rank 1 over cores (vocab x dim factors) {shape}")
        rank, cap = 1, useful_rank(self.layout)
        while rank < cap and tt_params(self.layout, rank + 1) <= num_params:
            rank += 1
        self.rank = rank
        ranks = [1] + [rank] * (n_chunks - 1) + [1]
        # Each implied table entry sums rank^(c-1) products of c core entries (see docstring).
        std = (self.output_std ** 2 / rank ** (n_chunks - 1)) ** (1 / (2 * n_chunks))
        self.cores = nn.ParameterList(
            nn.Parameter(torch.randn((n, ranks[k], d, ranks[k + 1]), generator=self.generator) * std)
            for k, (n, d) in enumerate(self.layout)
        )
        # Place value of each digit, most significant first (core 1).
        radices = [n for n, _ in self.layout]
        self.strides = [math.prod(radices[k + 1:]) for k in range(n_chunks)]

    def digits(self, ids: torch.Tensor) -> torch.Tensor:
        """Mixed-radix digits of the ids: (N,) -> (N, c), digit k in [0, n_k)."""
        ids = ids.to(torch.int64)
        return torch.stack([(ids // stride) % n for stride, (n, _) in zip(self.strides, self.layout)],
                           dim=1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        digits = self.digits(ids)
        n = ids.shape[0]
        v = self._slices(0, digits).reshape(n, self.layout[0][1], -1)  # (N, d_1, R)
        for k in range(1, len(self.cores)):
            core = self._slices(k, digits)  # (N, R, d_k, R_k)
            v = torch.bmm(v, core.reshape(n, core.shape[1], -1))  # (N, d_1..d_{k-1}, d_k R_k)
            v = v.reshape(n, -1, core.shape[3])  # (N, d_1..d_k, R_k)
        return v.reshape(n, self.dim)

    def _slices(self, k: int, digits: torch.Tensor) -> torch.Tensor:
        """Core k's slice for each id: (N, R_{k-1}, d_k, R_k), gathered as rows of a 2-d view."""
        core = self.cores[k]
        return lookup(core.reshape(core.shape[0], -1), digits[:, k]).reshape(-1, *core.shape[1:])

    def config(self) -> dict:
        return {"rank": self.rank, "n_chunks": len(self.layout),
                "vocab_factors": [n for n, _ in self.layout],
                "dim_factors": [d for _, d in self.layout]}
