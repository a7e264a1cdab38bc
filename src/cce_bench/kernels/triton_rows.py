"""The Triton programs behind kernels/: gather_rows and scatter_add_rows (each program moves a
block of BLOCK rows of WIDTH columns, width padded to a power of two and masked),
nearest_centroids, dhe_encoding, universal_hash, and the flat reads of hnet and ROBE
(read_pairs, read_windows) with their scatter-adds, hemb's and bloom's sums of rows
(read_mixed) with their backward, and AdamW over a stack's flat tensors (optim.py)."""

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
# Triton compiles a program again for each pattern of its integer arguments (equal to 1, a
# multiple of 16). Counts of ids, rows, centroids and members set masks, loop bounds and the
# offsets of whole members, where that knowledge buys little, so they are left out of it
# (do_not_specialize): the paper sweep compiles 38 variants instead of 73 (BENCHMARKS.md,
# session 13). Widths stay specialized: a row's alignment lets its loads be vectorized.


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


@triton.jit(do_not_specialize=["n", "n_rows"])
def _gather(table, rows, out, n, n_rows, width, BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    position, row, column, mask = _block(rows, n, n_rows, width, BLOCK, WIDTH)
    values = tl.load(table + row[:, None] * width + column[None, :], mask=mask, other=0)
    written = (position < n)[:, None] & (column[None, :] < width)
    tl.store(out + position[:, None] * width + column[None, :], values, mask=written)


@triton.jit(do_not_specialize=["n", "n_rows"])
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


@triton.jit(do_not_specialize=["n", "k"])
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


@triton.jit(do_not_specialize=["n"])
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


@triton.jit
def _universal(z, c, PRIME: tl.constexpr):
    """hashing.py's linear step on mixed keys z (uint64) with the function at c (a1, a2, a3, b),
    or a block of functions at a block of pointers c (broadcast against z): values in [0, p).
    Products below 2^53, their sum below 2^55: int64 never overflows."""
    z2 = ((z >> 43) & 0x1FFFFF).to(tl.int64)
    z1 = ((z >> 22) & 0x1FFFFF).to(tl.int64)
    z0 = (z & 0x3FFFFF).to(tl.int64)
    return (tl.load(c + 3) + tl.load(c) * z2 + tl.load(c + 1) * z1 + tl.load(c + 2) * z0) % PRIME


# A universal-hash program's tile: HASH_BLOCK_N ids x up to HASH_MAX_K functions.
HASH_BLOCK_N, HASH_MAX_K = 256, 8


@triton.jit
def _mix(z):
    """hashing.mix on uint64 keys: products wrap modulo 2^64 as int64's do, shifts are logical."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


@triton.jit(do_not_specialize=["n"])
def _universal_hash(ids, coefficients, moduli, out, n, k, m, PRIME: tl.constexpr,
                    PER_MEMBER: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """hashing.universal_hash of member program_id(2)'s ids with its k functions into [0, m)
    (m = moduli[member] if PER_MEMBER): out (R, N, k) int64."""
    member = tl.program_id(2).to(tl.int64)
    row = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    col = tl.program_id(1).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    in_n, in_k = row < n, col < k
    i = tl.load(ids + member * n + row, mask=in_n, other=0).to(tl.int64)
    z = _mix(i.to(tl.uint64, bitcast=True))[:, None]
    # Columns past k read function k - 1 (in bounds); their values are not stored.
    c = coefficients + (member * k + tl.minimum(col, k - 1)) * 4
    h = _universal(z, c[None, :], PRIME)  # (BLOCK_N, BLOCK_K)
    if PER_MEMBER:
        m = tl.load(moduli + member)
    tl.store(out + (member * n + row[:, None]) * k + col[None, :], h % m,
             mask=in_n[:, None] & in_k[None, :])


def universal_hash(ids: torch.Tensor, coefficients: torch.Tensor, moduli: torch.Tensor | None,
                   m: int, prime: int, out: torch.Tensor) -> None:
    r, n, k = out.shape  # ids (R, N), coefficients (R, k, 4); moduli (R,) or None: m for all
    if r and n and k:
        block_k = min(triton.next_power_of_2(k), HASH_MAX_K)
        grid = (triton.cdiv(n, HASH_BLOCK_N), triton.cdiv(k, block_k), r)
        _universal_hash[grid](ids, coefficients, ids if moduli is None else moduli, out, n, k,
                              m, PRIME=prime, PER_MEMBER=moduli is not None,
                              BLOCK_N=HASH_BLOCK_N, BLOCK_K=block_k)


@triton.jit
def _pair_block(ids, coefficients, sign_coefficients, sizes, base, n, dim, PRIME: tl.constexpr,
                SIGNED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """hnet's positions of member program_id(1)'s ids in the stacked weights, each coordinate's
    sign (1.0 unsigned), the (id, coordinate) offsets in the (R, N, dim) output and the mask.
    The key i * dim + k goes through splitmix64's finalizer in uint64, whose products wrap
    modulo 2^64 as hashing.mix's int64 ones do, and whose shifts are logical."""
    member = tl.program_id(1).to(tl.int64)
    row = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    col = tl.arange(0, BLOCK_D)
    mask = (row < n)[:, None] & (col < dim)[None, :]
    i = tl.load(ids + member * n + row, mask=row < n, other=0).to(tl.int64)
    z = _mix((i[:, None] * dim + col[None, :]).to(tl.uint64, bitcast=True))
    position = (_universal(z, coefficients + member * 4, PRIME) % tl.load(sizes + member)
                + tl.load(base + member))
    if SIGNED:
        sign = 1.0 - 2.0 * (_universal(z, sign_coefficients + member * 4, PRIME) & 1).to(tl.float32)
    else:
        sign = tl.full((BLOCK_N, BLOCK_D), 1.0, tl.float32)
    return position, sign, (member * n + row)[:, None] * dim + col[None, :], mask


@triton.jit(do_not_specialize=["n"])
def _read_pairs(weights, ids, coefficients, sign_coefficients, sizes, base, out, n, dim,
                PRIME: tl.constexpr, SIGNED: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    position, sign, at, mask = _pair_block(ids, coefficients, sign_coefficients, sizes, base, n,
                                           dim, PRIME, SIGNED, BLOCK_N, BLOCK_D)
    tl.store(out + at, tl.load(weights + position, mask=mask, other=0.0) * sign, mask=mask)


@triton.jit(do_not_specialize=["n"])
def _add_pairs(target, ids, coefficients, sign_coefficients, sizes, base, grad, n, dim,
               PRIME: tl.constexpr, SIGNED: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr):
    position, sign, at, mask = _pair_block(ids, coefficients, sign_coefficients, sizes, base, n,
                                           dim, PRIME, SIGNED, BLOCK_N, BLOCK_D)
    tl.atomic_add(target + position, tl.load(grad + at, mask=mask) * sign, mask=mask,
                  sem="relaxed")


def _pairs(kernel, flat, ids, coefficients, sign_coefficients, sizes, base, values, prime):
    r, n = ids.shape
    dim = values.shape[2]
    (programs,), block, width = _shape(n, dim)  # ids as rows of dim values
    if r and n:
        signed = sign_coefficients is not None
        kernel[(programs, r)](
            flat, ids, coefficients, sign_coefficients if signed else coefficients, sizes, base,
            values, n, dim, PRIME=prime, SIGNED=signed, BLOCK_N=block, BLOCK_D=width)


def read_pairs(weights, ids, coefficients, sign_coefficients, sizes, base, out, prime):
    """out (R, N, dim) := hnet's weights at member r's hashed (id, coordinate) positions."""
    _pairs(_read_pairs, weights, ids, coefficients, sign_coefficients, sizes, base, out, prime)


def add_pairs(target, ids, coefficients, sign_coefficients, sizes, base, grad, prime):
    """target[position of (r, id, k)] += sign * grad[r, id, k]: read_pairs' backward."""
    _pairs(_add_pairs, target, ids, coefficients, sign_coefficients, sizes, base, grad, prime)


@triton.jit
def _window_block(slots, lengths, base, n, chunks, width, BLOCK_N: tl.constexpr,
                  BLOCK_W: tl.constexpr):
    """ROBE's positions of member program_id(1)'s windows (N * c of them, chunk j's at slot s:
    base[r, j] + (s + t) mod L_r for t < width, s < L_r and width <= L_r), their offsets in the
    (R, N, c, width) output and the mask."""
    member = tl.program_id(1).to(tl.int64)
    window = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = window < n * chunks
    slot = tl.load(slots + member * n * chunks + window, mask=inside, other=0).to(tl.int64)
    start = tl.load(base + member * chunks + window % chunks, mask=inside, other=0)
    length = tl.load(lengths + member)
    t = tl.arange(0, BLOCK_W)
    position = slot[:, None] + t[None, :]
    position = tl.where(position >= length, position - length, position) + start[:, None]
    at = (member * n * chunks + window)[:, None] * width + t[None, :]
    return position, at, inside[:, None] & (t[None, :] < width)


@triton.jit(do_not_specialize=["n"])
def _read_windows(array, slots, lengths, base, out, n, chunks, width, BLOCK_N: tl.constexpr,
                  BLOCK_W: tl.constexpr):
    position, at, mask = _window_block(slots, lengths, base, n, chunks, width, BLOCK_N, BLOCK_W)
    tl.store(out + at, tl.load(array + position, mask=mask, other=0.0), mask=mask)


@triton.jit(do_not_specialize=["n"])
def _add_windows(target, slots, lengths, base, grad, n, chunks, width, BLOCK_N: tl.constexpr,
                 BLOCK_W: tl.constexpr):
    position, at, mask = _window_block(slots, lengths, base, n, chunks, width, BLOCK_N, BLOCK_W)
    tl.atomic_add(target + position, tl.load(grad + at, mask=mask), mask=mask, sem="relaxed")


def _windows(kernel, flat, slots, lengths, base, values):
    r, n, chunks, width = values.shape
    (programs,), block, padded = _shape(n * chunks, width)  # windows as rows of width values
    if r and n and chunks:
        kernel[(programs, r)](flat, slots, lengths, base, values, n, chunks, width,
                              BLOCK_N=block, BLOCK_W=padded)


def read_windows(array, slots, lengths, base, out):
    """out (R, N, c, w) := ROBE's windows of the flat array at slots (R, N, c)."""
    _windows(_read_windows, array, slots, lengths, base, out)


def add_windows(target, slots, lengths, base, grad):
    """target[every position of every window] += grad (R, N, c, w): read_windows' backward."""
    _windows(_add_windows, target, slots, lengths, base, grad)


@triton.jit
def _mixed_block(weight_rows, n, n_weights, dim, WEIGHTED: tl.constexpr, BLOCK_N: tl.constexpr,
                 WIDTH: tl.constexpr):
    """A weighted sum's items of this program: their positions, weight rows (0 unweighted;
    a row outside the n_weights rows is masked), the columns and the mask of the
    (BLOCK_N, WIDTH) output tile."""
    item = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = item < n
    if WEIGHTED:
        weight_row = tl.load(weight_rows + item, mask=inside, other=0).to(tl.int64)
        inside = inside & (weight_row >= 0) & (weight_row < n_weights)
    else:
        weight_row = tl.zeros((BLOCK_N,), tl.int64)
    column = tl.arange(0, WIDTH)
    return item, weight_row, inside, column, inside[:, None] & (column[None, :] < dim)


@triton.jit
def _mixed_row(table, slots, item, inside, column, n_rows, dim, j, C: tl.constexpr):
    """Row j of each item: its row in table and the (BLOCK_N, WIDTH) values (a row
    outside the table reads as 0 and is added nowhere)."""
    row = tl.load(slots + item * C + j, mask=inside, other=0).to(tl.int64)
    mask = (inside & (row >= 0) & (row < n_rows))[:, None] & (column[None, :] < dim)
    return row, mask, tl.load(table + row[:, None] * dim + column[None, :], mask=mask,
                              other=0.0)


@triton.jit(do_not_specialize=["n", "n_rows", "n_weights"])
def _read_mixed(table, weights, slots, weight_rows, out, n, n_rows, n_weights, dim,
                C: tl.constexpr, WEIGHTED: tl.constexpr, BLOCK_N: tl.constexpr,
                WIDTH: tl.constexpr):
    item, weight_row, inside, column, mask = _mixed_block(weight_rows, n, n_weights, dim,
                                                          WEIGHTED, BLOCK_N, WIDTH)
    total = tl.zeros((BLOCK_N, WIDTH), tl.float32)
    for j in tl.static_range(C):
        _, _, values = _mixed_row(table, slots, item, inside, column, n_rows, dim, j, C)
        if WEIGHTED:
            w = tl.load(weights + weight_row * C + j, mask=inside, other=0.0)
            total += w[:, None] * values
        else:
            total += values
    written = (item < n)[:, None] & (column[None, :] < dim)
    tl.store(out + item[:, None] * dim + column[None, :], total, mask=written)


@triton.jit(do_not_specialize=["n", "n_rows", "n_weights"])
def _add_mixed(table, weights, slots, weight_rows, grad, grad_table, grad_weights,
               n, n_rows, n_weights, dim, C: tl.constexpr, WEIGHTED: tl.constexpr,
               BLOCK_N: tl.constexpr, WIDTH: tl.constexpr):
    item, weight_row, inside, column, mask = _mixed_block(weight_rows, n, n_weights, dim,
                                                          WEIGHTED, BLOCK_N, WIDTH)
    g = tl.load(grad + item[:, None] * dim + column[None, :], mask=mask, other=0.0)
    for j in tl.static_range(C):
        row, row_mask, values = _mixed_row(table, slots, item, inside, column, n_rows,
                                           dim, j, C)
        if WEIGHTED:
            w = tl.load(weights + weight_row * C + j, mask=inside, other=0.0)
            tl.atomic_add(grad_table + row[:, None] * dim + column[None, :],
                          w[:, None] * g, mask=row_mask, sem="relaxed")
            tl.atomic_add(grad_weights + weight_row * C + j, tl.sum(g * values, axis=1),
                          mask=inside, sem="relaxed")
        else:
            tl.atomic_add(grad_table + row[:, None] * dim + column[None, :], g,
                          mask=row_mask, sem="relaxed")


def _mixed(kernel, table, weights, slots, weight_rows, *tensors):
    n, c = slots.shape
    dim = table.shape[1]
    grid, block, padded = _shape(n, dim)
    weighted = weights is not None
    if n:  # unweighted, the weight pointers are never read: any tensor stands in
        kernel[grid](table, weights if weighted else table, slots,
                     weight_rows if weighted else slots, *tensors, n, table.shape[0],
                     weights.shape[0] if weighted else 0, dim, C=c, WEIGHTED=weighted,
                     BLOCK_N=block, WIDTH=padded)


def read_mixed(table, weights, slots, weight_rows, out):
    """out (N, dim) := sum_j weights[weight_rows, j] * table[slots[:, j]] (hemb), or the
    plain sum without weights (bloom)."""
    _mixed(_read_mixed, table, weights, slots, weight_rows, out)


def add_mixed(table, weights, slots, weight_rows, grad, grad_table, grad_weights):
    """read_mixed's backward: the tables' gradients added atomically in place."""
    _mixed(_add_mixed, table, weights, slots, weight_rows, grad, grad_table,
           grad_weights if weights is not None else grad_table)


@triton.jit(do_not_specialize=["n", "members"])
def _adamw_members(param, grad, exp_avg, exp_avg_sq, steps, starts, first, n, members, lr,
                   beta1, beta2, log2_beta1, log2_beta2, eps, weight_decay, BLOCK: tl.constexpr,
                   SPAN: tl.constexpr):
    """AdamW on BLOCK values of a flat tensor of members, each at its member's step count
    steps[r] + 1: first[b] is the member of the block's first value, and the block meets at
    most SPAN members, whose starts follow in `starts` (padded with n). torch's fused AdamW's
    order of operations, in fp32: decoupled weight decay, the moments, the bias-corrected step
    (beta^t as exp2(t log2 beta)). The blocks are aligned, so the loads are vectorised: a table
    of unaligned per-member blocks ran at 1.5 TB/s on an H200, these at 4.1."""
    block = tl.program_id(0)
    i = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    member = tl.load(first + block)
    t = tl.zeros([BLOCK], dtype=tl.float32) + tl.load(steps + member)
    for j in tl.static_range(1, SPAN):
        later = tl.minimum(member + j, members - 1)
        t = tl.where(i >= tl.load(starts + member + j), tl.load(steps + later), t)
    t += 1.0
    p = tl.load(param + i, mask=mask)
    g = tl.load(grad + i, mask=mask)
    m = tl.load(exp_avg + i, mask=mask)
    v = tl.load(exp_avg_sq + i, mask=mask)
    p = p - lr * weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    step_size = lr / (1.0 - tl.exp2(t * log2_beta1))
    denom = tl.sqrt(v) / tl.sqrt(1.0 - tl.exp2(t * log2_beta2)) + eps
    tl.store(param + i, p - step_size * m / denom, mask=mask)
    tl.store(exp_avg + i, m, mask=mask)
    tl.store(exp_avg_sq + i, v, mask=mask)


def adamw_members(param, grad, exp_avg, exp_avg_sq, steps, starts, first, span, block, lr,
                  beta1, beta2, eps, weight_decay):
    """In place on flat contiguous fp32 tensors (kernels.adamw_, kernels.adamw_layout)."""
    import math

    n = param.numel()
    if n:
        _adamw_members[(triton.cdiv(n, block),)](
            param, grad, exp_avg, exp_avg_sq, steps, starts, first, n, len(steps), lr, beta1,
            beta2, math.log2(beta1), math.log2(beta2), eps, weight_decay, BLOCK=block,
            SPAN=span, num_warps=4)
