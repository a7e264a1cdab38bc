"""Seeded universal hashing, vectorised in torch on any device.

h(x) = ((a1 * z2 + a2 * z1 + a3 * z0 + b) mod p) mod m,   z = mix(x),
with p = 2^31 - 1 (a Mersenne prime), z = z2 * 2^43 + z1 * 2^22 + z0 split in pieces of 21, 21
and 22 bits, and a1, a2, a3 in [1, p), b in [0, p) drawn from a seed (4 int64 per function).

mix is splitmix64's finalizer (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014; the constants are Stafford's "Mix13"), a fixed bijection of the 64-bit
integers: two xor-shift-multiply rounds and a last xor-shift, each step invertible (an xor with a
right shift of itself, a product with an odd constant mod 2^64). Because it is a bijection, two
distinct ids stay distinct, and the linear map over (z2, z1, z0), pieces below p, keeps the
family 2-universal on every int64 id: any two collide with probability about 1/m. Every product
stays below 2^53 and the sum below 2^55, so the linear step never overflows.

Why the mixer: the linear map alone is 2-universal only on average over its functions. Applied to
dense ids 0, 1, 2, ... a single function is a lattice, and its tail is heavy: over 4,000 drawn
functions on ids 0..6039, 0.2-0.35% (into 64 rows) and 8% (into 4,096 rows) put more than twice
the colliding pairs of a random function together, the worst 73x. After the mixer the ids are
scattered over 64 bits: none of 4,000 functions exceeds 1.06x, as for a random function
(tests/embeddings/test_hashing.py bounds the tail).

Arithmetic: torch's int64 products wrap modulo 2^64 (two's complement), which is what the mixer
needs; right shifts of int64 are arithmetic, so every shift is masked to make it logical. The
mixer is computed once per id and shared by all n functions.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import kernels

PRIME = (1 << 31) - 1
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # splitmix64's multipliers as signed int64
_M2 = 0x94D049BB133111EB - (1 << 64)
_PIECES = ((43, 21), (22, 21), (0, 22))  # (shift, bits) of z2, z1, z0


def shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: it copies the sign bit)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix(ids: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer, a bijection of the int64 values: ids (*S) -> (*S) int64."""
    z = ids.to(torch.int64)
    z = (z ^ shift_right(z, 30)) * _M1
    z = (z ^ shift_right(z, 27)) * _M2
    return z ^ shift_right(z, 31)


def draw_coefficients(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n independent hash functions as an (n, 4) int64 tensor of (a1, a2, a3, b)."""
    a = torch.randint(1, PRIME, (n, 3), generator=generator, dtype=torch.int64)
    b = torch.randint(0, PRIME, (n, 1), generator=generator, dtype=torch.int64)
    return torch.cat([a, b], dim=1)


def hash_mod_prime(ids: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """The family before the range reduction: ids (*S) -> (*S, n) int64 in [0, p).

    coefficients is (n, 4), or (*C, n, 4) broadcasting against ids (several tables' functions
    at once: ids (B, T) with (T, n, 4) hash column t with table t's n functions)."""
    z = mix(ids).unsqueeze(-1)  # (*S, 1)
    c = coefficients.to(z.device)
    h = c[..., 3]
    for j in range(len(_PIECES)):
        h = h + c[..., j] * _piece(z, j)  # (*S, n)
    return h % PRIME


def _piece(z: torch.Tensor, j: int) -> torch.Tensor:
    shift, bits = _PIECES[j]
    return shift_right(z, shift) & ((1 << bits) - 1)


def mixed_pieces(ids: torch.Tensor) -> torch.Tensor:
    """The (z2, z1, z0) pieces of each mixed id that the linear step multiplies: ids (*S) ->
    (*S, 3) int64 (for programs that compute the family themselves, kernels.dhe_encoding)."""
    z = mix(ids)
    return torch.stack([_piece(z, j) for j in range(len(_PIECES))], dim=-1)


def universal_hash(ids: torch.Tensor, coefficients: torch.Tensor, m: int) -> torch.Tensor:
    """Hash ids (*S) with each of the n functions in coefficients (n, 4) into [0, m).

    Returns (*S, n) int64. On CUDA one program computes it (kernels.universal_hash), where
    torch runs about thirty element-wise kernels over the int64 values.
    """
    fused = kernels.universal_hash(ids.reshape(1, -1), coefficients.unsqueeze(0), m)
    if fused is not None:
        return fused.view(*ids.shape, coefficients.shape[0])
    return hash_mod_prime(ids, coefficients) % m


def hash_members(ids: torch.Tensor, coefficients: torch.Tensor,
                 moduli: torch.Tensor) -> torch.Tensor:
    """universal_hash of R members at once: ids (R, N), member r's functions coefficients[r]
    (R, n, 4) into [0, moduli[r]) (moduli (R,) int64) -> (R, N, n) int64, the integers each
    member's own universal_hash gives."""
    fused = kernels.universal_hash(ids, coefficients, moduli)  # None off CUDA
    if fused is not None:
        return fused
    return hash_mod_prime(ids, coefficients.unsqueeze(1)) % moduli.view(-1, 1, 1)


class UniversalHash(nn.Module):
    """n seeded hash functions into [0, m); the coefficients are a buffer, so they are saved."""

    def __init__(self, n: int, m: int, generator: torch.Generator | None = None):
        super().__init__()
        self.m = m
        self.register_buffer("coefficients", draw_coefficients(n, generator))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return universal_hash(ids, self.coefficients, self.m)

    def redraw(self, generators: list[torch.Generator]) -> None:
        """Replace every function by a fresh one, function j drawn from generators[j] (CCE draws
        a new hash per chunk per clustering round); one copy to the device for all."""
        drawn = torch.cat([draw_coefficients(1, generator) for generator in generators])
        self.coefficients.copy_(drawn)
