"""Seeded universal hashing, vectorised in torch on any device.

h(x) = ((a1 * hi + a2 * lo + b) mod p) mod m, with p = 2^31 - 1 (a Mersenne prime),
x = hi * 2^30 + lo split in 30-bit halves and a1, a2 in [1, p), b in [0, p) drawn from a seed.
Splitting keeps every product below 2^61, so int64 never overflows, and makes the family
2-universal on (hi, lo) pairs, i.e. on every id in [0, 2^60): any two distinct ids collide with
probability about 1/m. That covers Criteo Terabyte's mapped ids (< 2^31) with room to spare.
"""

from __future__ import annotations

import torch
from torch import nn

PRIME = (1 << 31) - 1
_HALF_BITS = 30
_HALF_MASK = (1 << _HALF_BITS) - 1


def draw_coefficients(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n independent hash functions as an (n, 3) int64 tensor of (a1, a2, b)."""
    a = torch.randint(1, PRIME, (n, 2), generator=generator, dtype=torch.int64)
    b = torch.randint(0, PRIME, (n, 1), generator=generator, dtype=torch.int64)
    return torch.cat([a, b], dim=1)


def universal_hash(ids: torch.Tensor, coefficients: torch.Tensor, m: int) -> torch.Tensor:
    """Hash ids (*S) with each of the n functions in coefficients (n, 3) into [0, m).

    Returns (*S, n) int64.
    """
    x = ids.to(torch.int64).unsqueeze(-1)  # (*S, 1)
    hi, lo = x >> _HALF_BITS, x & _HALF_MASK
    c = coefficients.to(x.device)
    h = (c[:, 0] * hi + c[:, 1] * lo + c[:, 2]) % PRIME  # (*S, n)
    return h % m


class UniversalHash(nn.Module):
    """n seeded hash functions into [0, m); the coefficients are a buffer, so they are saved."""

    def __init__(self, n: int, m: int, generator: torch.Generator | None = None):
        super().__init__()
        self.m = m
        self.register_buffer("coefficients", draw_coefficients(n, generator))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return universal_hash(ids, self.coefficients, self.m)

    def redraw(self, index: int, generator: torch.Generator) -> None:
        """Replace function `index` by a fresh one (CCE draws a new hash per clustering round)."""
        self.coefficients[index] = draw_coefficients(1, generator)[0].to(self.coefficients.device)
