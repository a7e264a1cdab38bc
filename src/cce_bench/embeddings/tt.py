"""TT-Rec: the embedding table as a tensor train (Yin, Acun, Wu, Liu and Chen, "TT-Rec: Tensor
Train Compression for Deep Learning Recommendation Model Embeddings", MLSys 2021,
arXiv:2101.11714).

The vocabulary is factored as n_1 x ... x n_c >= vocab and the dimension as d = d_1 x ... x d_c.
An id i has the mixed-radix digits (i_1, ..., i_c), an output coordinate j the digits
(j_1, ..., j_c), and
    e(i)[j] = G_1[i_1, :, j_1, :] G_2[i_2, :, j_2, :] ... G_c[i_c, :, j_c, :],
a product of matrices: core G_k has shape (n_k, R_{k-1}, d_k, R_k), with R_0 = R_c = 1 and
every inner rank R_k = R. The forward pass contracts the cores of each half of the train over
all their digits (h = ceil(c/2) cores on the left: a (n_1..n_h, d_1..d_h, R) tensor of about
sqrt(vocab) rows, likewise on the right), gathers each id's row of both halves and multiplies
them, one batched (d_L x R)(R x d_R) product per id. Where the vocabulary has at most 8 rows
per id of the batch, it instead builds the implied table with one matrix product of the halves
and reads the ids' rows: the same values, much faster than many tiny products on a CPU.

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
Init (a departure from TT-Rec's Gaussian cores): an entry of the implied table is
g^T M h, g a row of the first core (1 x R), M the product of the inner cores' R x R matrices,
h a column of the last core (R x 1). Inner cores start I + N(0, eps^2) with eps^2 = 1 / (4R),
the last core N(0, 1 / R) and the first N(0, a^2), a = output_std / (1 + R eps^2)^((c-2)/2),
so that E[(g^T M h)^2] = a^2 (1 + R eps^2)^(c-2) = output_std^2 (c = 2: the first core
N(0, output_std^2), the last N(0, 1 / R); c = 1: the plain table). The first core then learns
at a plain table's pace (its gradient is M h, of norm about one) and the others as gains near
one. TT-Rec's init, every entry N(0, sigma^2) with sigma^(2c) R^(c-1) = output_std^2 (sigma =
0.2 for c = 4, R = 4, dim 32), made each core's gradient a product of c - 1 small factors, and
training sat at BCE ln 2 for three to four epochs on syn-1000-300000 at 16 and 64 ppd (issue 11;
docs/init.md).
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

_MATERIALISE = 8  # build the whole implied table when it has at most this many rows per id


def materialise(table_rows: int, ids: int, dim: int, per_id: int, on_gpu: bool) -> bool:
    """Whether building the implied (table_rows x dim) table beats the per-id path, which
    gathers per_id values (d_L R + R d_R) of the halves for each of the batch's ids.

    Everywhere: at most _MATERIALISE table rows per id (chosen on a CPU, where the many tiny
    per-id products are slow). On a GPU also where the table holds no more values than the
    per-id path gathers: both paths are then bound by moving those values, and the table's
    products run as large GEMMs. Measured on an H200 (BENCHMARKS.md, session 7), 3-seed stacks
    on ml-25m's shape: at ratio 0.68 (rank 161) the table was 1.16x faster in fp32 and 1.43x in
    tf32, at 1.37 (rank 80) the two tied in fp32, at 2.8 (rank 39) the per-id path was 1.3x
    faster in fp32."""
    if table_rows <= _MATERIALISE * ids:
        return True
    return on_gpu and table_rows * dim <= ids * per_id


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


def initial_cores(layout: list[tuple[int, int]], rank: int, output_std: float,
                  generator: torch.Generator) -> list[nn.Parameter]:
    """Cores (n_k, R_{k-1}, d_k, R_k) whose implied table has entries of std output_std: the
    first carries the scale, the inner ones start near the identity (see the docstring)."""
    c = len(layout)
    if c == 1:
        (n, d), = layout
        return [nn.Parameter(torch.randn((n, 1, d, 1), generator=generator) * output_std)]
    eps = 0.5 / math.sqrt(rank)  # R eps^2 = 1/4
    first_std = output_std / (1 + rank * eps ** 2) ** ((c - 2) / 2)
    (n1, d1), *inner, (nc, dc) = layout
    cores = [torch.randn((n1, 1, d1, rank), generator=generator) * first_std]
    for n, d in inner:
        noise = torch.randn((n, rank, d, rank), generator=generator) * eps
        cores.append(torch.eye(rank).unsqueeze(1) + noise)  # (R, 1, R) broadcast over n and d
    cores.append(torch.randn((nc, rank, dc, 1), generator=generator) / math.sqrt(rank))
    return [nn.Parameter(core) for core in cores]


@register("tt")
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
        self.cores = nn.ParameterList(initial_cores(self.layout, rank, self.output_std,
                                                    self.generator))
        # The train is read as two halves that meet in the middle (see embed()).
        self.split = (n_chunks + 1) // 2
        self.left_rows = math.prod(n for n, _ in self.layout[:self.split])
        self.right_rows = math.prod(n for n, _ in self.layout[self.split:])

    def halves(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cores contracted into a left half (n_L, d_L, R) and a right half (n_R, R, d_R).

        Row a of the left half is the digits of cores 1..h read as one number (core 1 most
        significant), its columns the output digits j_1..j_h likewise; the right half the same
        for cores h+1..c. None for the right half of a one-core train.
        """
        left = self.cores[0].squeeze(1)  # (n_1, d_1, R)
        for core in self.cores[1:self.split]:
            left = torch.einsum("apr,brqs->abpqs", left, core)  # (A, n_k, P, d_k, R)
            left = left.reshape(-1, left.shape[2] * left.shape[3], left.shape[4])
        if len(self.cores) == 1:
            return left, None
        right = self.cores[-1].squeeze(-1)  # (n_c, R, d_c)
        for core in reversed(self.cores[self.split:-1]):
            right = torch.einsum("arqs,bsp->abrqp", core, right)  # (n_k, B, R, d_k, P)
            right = right.reshape(-1, right.shape[2], right.shape[3] * right.shape[4])
        return left, right

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(torch.int64)
        n = ids.shape[0]
        left, right = self.halves()
        row_l = (ids // self.right_rows) % self.left_rows
        if right is None:
            return lookup(left.reshape(self.left_rows, self.dim), row_l)
        row_r = ids % self.right_rows
        per_id = (left.shape[1] + right.shape[2]) * self.rank
        if materialise(self.left_rows * self.right_rows, n, self.dim, per_id, ids.is_cuda):
            table = torch.einsum("apr,brq->abpq", left, right)  # (n_L, n_R, d_L, d_R)
            return lookup(table.reshape(-1, self.dim), row_l * self.right_rows + row_r)
        a = lookup(left.reshape(self.left_rows, -1), row_l).reshape(n, -1, self.rank)
        b = lookup(right.reshape(self.right_rows, -1), row_r).reshape(n, self.rank, -1)
        return torch.bmm(a, b).reshape(n, self.dim)  # (N, d_L, R) x (N, R, d_R)

    def config(self) -> dict:
        return {"rank": self.rank, "n_chunks": len(self.layout),
                "vocab_factors": [n for n, _ in self.layout],
                "dim_factors": [d for _, d in self.layout]}
