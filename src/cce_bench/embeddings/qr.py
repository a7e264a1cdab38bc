"""The quotient-remainder trick (Shi, Mudigere, Naumov & Yang, "Compositional Embeddings Using
Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020,
arXiv:1909.02107).

Two tables, one indexed by the quotient and one by the remainder of the id by m, combined:
    e(i) = Q[i // m] (op) R[i % m],   Q has ceil(vocab / m) rows, R has m rows,
op = element-wise product ("mult", the paper's best), sum ("sum"), or concatenation ("concat",
each table dim / 2 wide). The two indices identify every id uniquely.
Budget: with w the table width (dim, or dim / 2 for concat), the method holds
g(m) * w values, g(m) = m + ceil(vocab / m); m in [1, vocab] is chosen to make g(m) the largest
that fits num_params // w (the most of the budget used; on a tie the larger m, a large remainder
table as in the paper). g is non-increasing for m(m+1) <= vocab and non-decreasing for
m(m-1) >= vocab, so two binary searches find it. A budget of (vocab + 1) * w or more gives
m = vocab, as good as a full table. Smallest budget: min_m g(m) * w (about 2 sqrt(vocab) * w).
Stores nothing besides the two tables (m is a constant).
Shape: ids (*S) -> (*S, dim).

Departures: the paper fixes m (the number of collisions per remainder) and reports the size;
here the budget fixes m.

Init: for "mult" the quotient table starts at ones and the remainder table N(0, s^2), s the
common output scale, so the product has standard deviation s and, at the start, each id's vector
is a plain table's row (that of its remainder) times a gain of one: the remainder table learns at
a plain table's pace and the quotient table as a per-coordinate gain. An earlier version drew
both tables N(0, s) (std sqrt(s) each, the product std s): each factor's gradient was then the
other factor, sqrt(s) = 0.13 at dim 32, and GMF's logit a product of four such factors, so
training sat at BCE ln 2 for three to four epochs on syn-1000-300000 and for nine of ten on
ML-100k at 4,096 ppd (issue 11; docs/init.md). "sum" starts both N(0, s^2 / 2), "concat"
both N(0, s^2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import BudgetTooSmall, ConfigError
from .base import CompressedEmbedding, lookup, normal_init
from .registry import register

COMBINES = ("mult", "sum", "concat")


def total_rows(vocab: int, m: int) -> int:
    """g(m): rows of both tables together."""
    return m + -(-vocab // m)


def _search(lo: int, hi: int, fits, want_first: bool) -> int | None:
    """First (or last) m in [lo, hi] with fits(m), for a predicate monotone on the range."""
    found = None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            found = mid
            hi, lo = (mid - 1, lo) if want_first else (hi, mid + 1)
        else:
            lo, hi = (mid + 1, hi) if want_first else (lo, mid - 1)
    return found


def _branches(vocab: int) -> tuple[int, int]:
    """(a, b): g is non-increasing on [1, a] and non-decreasing on [b, vocab], with b <= a."""
    s = math.isqrt(vocab)  # s^2 <= vocab < (s+1)^2
    top = s if s * (s + 1) <= vocab else s - 1  # the largest m with m(m+1) <= vocab
    low = s + 1 if (s + 1) * s >= vocab else s + 2  # the smallest m with m(m-1) >= vocab
    # g(m+1) <= g(m) while m(m+1) <= vocab, g(m) >= g(m-1) once m(m-1) >= vocab.
    return min(top + 1, vocab), max(low - 1, 1)


def minimum_rows(vocab: int) -> int:
    """min over m of g(m)."""
    a, b = _branches(vocab)
    return min(total_rows(vocab, a), total_rows(vocab, b))


def choose_m(vocab: int, max_rows: int) -> int | None:
    """The m in [1, vocab] with the largest g(m) <= max_rows (larger m on a tie); None if none."""
    a, b = _branches(vocab)
    fits = lambda m: total_rows(vocab, m) <= max_rows  # noqa: E731
    small = _search(1, a, fits, want_first=True)  # g falls on [1, a]: the first that fits
    large = _search(b, vocab, fits, want_first=False)  # g rises on [b, vocab]: the last
    options = [m for m in (small, large) if m is not None]
    if not options:
        return None
    return max(options, key=lambda m: (total_rows(vocab, m), m))


@register("qr")
class QREmbedding(CompressedEmbedding):
    uses_chunks = False  # n_chunks is ignored

    def __init__(self, vocab: int, num_params: int, dim: int, n_chunks: int = 1, *,
                 combine: str = "mult", **opts):
        super().__init__(vocab, num_params, dim, **opts)
        if combine not in COMBINES:
            raise ConfigError(f"qr: combine must be one of {', '.join(COMBINES)}, not '{combine}'")
        if combine == "concat" and dim % 2:
            raise ConfigError(f"qr: combine='concat' splits dim in two halves; dim {dim} is odd")
        self.combine = combine
        width = dim // 2 if combine == "concat" else dim
        m = choose_m(vocab, num_params // width)
        if m is None:
            raise BudgetTooSmall("qr", num_params, minimum_rows(vocab) * width,
                                 f"vocab {vocab}, tables {width} wide")
        self.m, self.quotients = m, -(-vocab // m)
        if combine == "mult":  # a gain of one times a plain table (see the docstring)
            self.quotient_table = nn.Parameter(torch.ones(self.quotients, width))
            self.remainder_table = normal_init((m, width), self.output_std, self.generator)
        else:
            std = self.output_std / math.sqrt(2) if combine == "sum" else self.output_std
            self.quotient_table = normal_init((self.quotients, width), std, self.generator)
            self.remainder_table = normal_init((m, width), std, self.generator)

    def indices(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(i // m, i % m) for ids (N,)."""
        return torch.div(ids, self.m, rounding_mode="floor"), ids % self.m

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        q, r = self.indices(ids)
        a, b = lookup(self.quotient_table, q), lookup(self.remainder_table, r)
        if self.combine == "mult":
            return a * b
        if self.combine == "sum":
            return a + b
        return torch.cat([a, b], dim=-1)

    def config(self) -> dict:
        return {"m": self.m, "quotient_rows": self.quotients, "combine": self.combine}
