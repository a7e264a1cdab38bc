"""The Triton programs behind kernels.gather_rows and scatter_add_rows: each program moves a
block of BLOCK rows of WIDTH columns (width padded to a power of two and masked)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements one program moves (16 KB of floats). With it the H200 reads 147,456 rows of 32 floats
# in 6.9 us (BENCHMARKS.md, "Row gathers in Triton"); other sizes were not tried.
PROGRAM_ELEMENTS = 4096
# A nearest-centroid program: 128 points against tiles of 64 centroids (an 8,192-float tile of
# dot products in registers). Not tuned: chosen for register room at d <= 64.
NEAREST_BLOCK_N, NEAREST_BLOCK_K = 128, 64


@triton.jit
def _block(rows, n, n_rows, width, BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    """This program's positions in rows, the table rows they name, the columns and the mask
    (a row outside the table's n_rows is masked: read as 0, added nowhere)."""
    position = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = position < n
    row = tl.load(rows + position, mask=inside, other=0).to(tl.int64)
    inside = inside & (row >= 0) & (row < n_rows)
    column = tl.arange(0, WIDTH)
    return position, row, column, inside[:, None] & (column[None, :] < width)


@triton.jit
def _gather(table, rows, out, n, n_rows, width, BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    position, row, column, mask = _block(rows, n, n_rows, width, BLOCK, WIDTH)
    values = tl.load(table + row[:, None] * width + column[None, :], mask=mask, other=0)
    written = (position < n)[:, None] & (column[None, :] < width)
    tl.store(out + position[:, None] * width + column[None, :], values, mask=written)


@triton.jit
def _scatter_add(target, rows, values, alpha, n, n_rows, width, BLOCK: tl.constexpr,
                 WIDTH: tl.constexpr):
    position, row, column, mask = _block(rows, n, n_rows, width, BLOCK, WIDTH)
    update = tl.load(values + position[:, None] * width + column[None, :], mask=mask)
    tl.atomic_add(target + row[:, None] * width + column[None, :], update * alpha, mask=mask,
                  sem="relaxed")


def _shape(n: int, width: int) -> tuple[tuple[int], int, int]:
    padded = triton.next_power_of_2(width)
    block = max(16, PROGRAM_ELEMENTS // padded)
    return (triton.cdiv(n, block),), block, padded


def gather(table: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> None:
    n, width = rows.numel(), table.shape[1]
    if n:
        grid, block, padded = _shape(n, width)
        _gather[grid](table, rows, out, n, table.shape[0], width, BLOCK=block, WIDTH=padded)


def scatter_add(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor,
                alpha: float) -> None:
    n, width = rows.numel(), target.shape[1]
    if n:
        grid, block, padded = _shape(n, width)
        _scatter_add[grid](target, rows, values, float(alpha), n, target.shape[0], width,
                           BLOCK=block, WIDTH=padded)


@triton.jit
def _nearest(points, centroids, norms, out, n, k, D: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_K: tl.constexpr):
    """For a block of one problem's points, the index of the nearest centroid: the smallest
    |c|^2 + bias - 2 x.c over tiles of centroids, kept in registers (no (n, k) block in memory);
    the first index wins a tie, as in torch.argmin."""
    problem = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_n = rows < n
    point = points + problem * n * D + rows * D
    first = centroids + problem * k * D
    best = tl.full((BLOCK_N,), float("inf"), tl.float32)
    best_index = tl.zeros((BLOCK_N,), tl.int64)
    for start in tl.range(0, k, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        in_k = cols < k
        dot = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        for j in tl.static_range(D):
            x = tl.load(point + j, mask=in_n, other=0.0)
            c = tl.load(first + cols * D + j, mask=in_k, other=0.0)
            dot += x[:, None] * c[None, :]
        norm = tl.load(norms + problem * k + cols, mask=in_k, other=float("inf"))
        distance = norm[None, :] - 2.0 * dot
        low, where = tl.min(distance, axis=1, return_indices=True)  # one pair, NaN or not
        where = where.to(tl.int64) + start
        better = low < best
        best = tl.where(better, low, best)
        best_index = tl.where(better, where, best_index)
    tl.store(out + problem * n + rows, best_index, mask=in_n)


def nearest(points: torch.Tensor, centroids: torch.Tensor, norms: torch.Tensor,
            out: torch.Tensor) -> None:
    b, n, d = points.shape
    k = centroids.shape[1]
    if n and b:
        grid = (triton.cdiv(n, NEAREST_BLOCK_N), b)
        _nearest[grid](points, centroids, norms, out, n, k, D=d, BLOCK_N=NEAREST_BLOCK_N,
                       BLOCK_K=NEAREST_BLOCK_K)

