"""The Triton programs behind kernels/: gather_rows and scatter_add_rows (each program moves a
block of BLOCK rows of WIDTH columns, width padded to a power of two and masked),
nearest_centroids and dhe_encoding."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements one program moves (16 KB of floats). With it the H200 reads 147,456 rows of 32 floats
# in 6.9 us (BENCHMARKS.md, "Row gathers in Triton"); other sizes were not tried.
PROGRAM_ELEMENTS = 4096
# A nearest-centroid program: 128 points against tiles of centroids, 32 wide with FMAs and 64
# with tl.dot. Each program keeps three (128 x tile) tiles in registers (dot products, best
# distance, best index): with FMAs 128 x 64 ran 3x slower than 128 x 32 (registers spill), and
# tl.dot ran faster at 128 x 64 than at 128 x 32, the two tried (BENCHMARKS.md, "A fused nearest
# centroid").
NEAREST_BLOCK_N, NEAREST_FMA_BLOCK_K, NEAREST_DOT_BLOCK_K = 128, 32, 64
# Up to this point width the dot products are fp32 FMAs, one rank-1 update per dimension; wider
# points use tl.dot in exact fp32 ("ieee"), the point width padded with zeros to 16.
NEAREST_FMA_DIM = 4


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
def _nearest(points, centroids, norms, out, n, k, D: tl.constexpr, PADDED_D: tl.constexpr,
             FMA: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """For a block of one problem's points, the index of the nearest centroid: the smallest
    |c|^2 + bias - 2 x.c. Over the tiles of centroids each (point, lane) pair keeps its own
    running minimum, element-wise; the one reduction over the lanes comes at the end (session
    4's program reduced every tile, on 128 x 64 tiles, and was 2x slower than the baddbmm
    blocks). No (n, k) block goes to memory; the smallest index wins a tie, as in torch.argmin."""
    problem = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_n = rows < n
    dims = tl.arange(0, PADDED_D)
    point = points + problem * n * D + rows * D
    first = centroids + problem * k * D
    if not FMA:
        x = tl.load(point[:, None] + dims[None, :],
                    mask=in_n[:, None] & (dims[None, :] < D), other=0.0)  # (BLOCK_N, PADDED_D)
    best = tl.full((BLOCK_N, BLOCK_K), float("inf"), tl.float32)
    best_index = tl.zeros((BLOCK_N, BLOCK_K), tl.int32)
    for start in tl.range(0, k, BLOCK_K):
        cols = start + tl.arange(0, BLOCK_K)
        in_k = cols < k
        if FMA:
            dot = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
            for j in tl.static_range(D):
                xj = tl.load(point + j, mask=in_n, other=0.0)
                c = tl.load(first + cols * D + j, mask=in_k, other=0.0)
                dot += xj[:, None] * c[None, :]
        else:
            c = tl.load(first + cols[None, :] * D + dims[:, None],  # (PADDED_D, BLOCK_K)
                        mask=in_k[None, :] & (dims[:, None] < D), other=0.0)
            dot = tl.dot(x, c, input_precision="ieee")
        norm = tl.load(norms + problem * k + cols, mask=in_k, other=float("inf"))
        distance = norm[None, :] - 2.0 * dot
        better = distance < best  # strictly: an earlier tile keeps a tie
        best = tl.where(better, distance, best)
        best_index = tl.where(better, cols[None, :].to(tl.int32), best_index)
    # The smallest index among the lanes that hold the minimum. Every centroid padded (all
    # inf): every lane holds index 0, as torch.argmin gives. A NaN distance is never taken here,
    # where argmin would return it.
    low = tl.min(best, axis=1)
    winner = tl.min(tl.where(best == low[:, None], best_index, 2147483647), axis=1)
    tl.store(out + problem * n + rows, winner.to(tl.int64), mask=in_n)


def nearest(points: torch.Tensor, centroids: torch.Tensor, norms: torch.Tensor,
            out: torch.Tensor) -> None:
    b, n, d = points.shape
    k = centroids.shape[1]
    if n and b:
        fma = d <= NEAREST_FMA_DIM
        padded = triton.next_power_of_2(d) if fma else max(16, triton.next_power_of_2(d))
        grid = (triton.cdiv(n, NEAREST_BLOCK_N), b)
        _nearest[grid](points, centroids, norms, out, n, k, D=d, PADDED_D=padded, FMA=fma,
                       BLOCK_N=NEAREST_BLOCK_N,
                       BLOCK_K=NEAREST_FMA_BLOCK_K if fma else NEAREST_DOT_BLOCK_K, num_warps=4)


# A DHE encoding program's tile: ids x hash functions.
ENCODE_BLOCK_N, ENCODE_BLOCK_K = 32, 128


@triton.jit
def _dhe_uniform(pieces, coefficients, out, n, k, k_out, m, PRIME: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """DHE's uniform encoding of one member's ids: ((a1 z2 + a2 z1 + a3 z0 + b) mod p) mod m,
    then 2 h / (m - 1) - 1 in float64 rounded to float32, as hashing.py and dhe.py compute it;
    columns k..k_out are zeros (the MLP's alignment padding)."""
    member = tl.program_id(2).to(tl.int64)
    ids = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    in_n, in_k = ids < n, cols < k
    piece = pieces + (member * n + ids) * 3
    z2 = tl.load(piece, mask=in_n, other=0)
    z1 = tl.load(piece + 1, mask=in_n, other=0)
    z0 = tl.load(piece + 2, mask=in_n, other=0)
    c = coefficients + (member * k + cols) * 4
    a1 = tl.load(c, mask=in_k, other=0)
    a2 = tl.load(c + 1, mask=in_k, other=0)
    a3 = tl.load(c + 2, mask=in_k, other=0)
    b = tl.load(c + 3, mask=in_k, other=0)
    # Products below 2^53 and their sum below 2^55 (hashing.py): int64 never overflows.
    h = b[None, :] + a1[None, :] * z2[:, None] + a2[None, :] * z1[:, None] \
        + a3[None, :] * z0[:, None]
    h = (h % PRIME) % m
    feature = (2.0 * h.to(tl.float64) / (m - 1) - 1.0).to(tl.float32)
    feature = tl.where(in_k[None, :], feature, 0.0)
    tl.store(out + (member * n + ids[:, None]) * k_out + cols[None, :], feature,
             mask=in_n[:, None] & (cols[None, :] < k_out))


def dhe_uniform(pieces: torch.Tensor, coefficients: torch.Tensor, m: int, prime: int,
                out: torch.Tensor) -> None:
    g, n, k_out = out.shape  # pieces (g, n, 3), coefficients (g, k, 4)
    k = coefficients.shape[1]
    if g and n and k_out:
        grid = (triton.cdiv(n, ENCODE_BLOCK_N), triton.cdiv(k_out, ENCODE_BLOCK_K), g)
        _dhe_uniform[grid](pieces, coefficients, out, n, k, k_out, m, PRIME=prime,
                           BLOCK_N=ENCODE_BLOCK_N, BLOCK_K=ENCODE_BLOCK_K)
