"""The Triton programs behind kernels.gather_rows and scatter_add_rows: each program moves a
block of BLOCK rows of WIDTH columns (width padded to a power of two and masked)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements one program moves (16 KB of floats). With it the H200 reads 147,456 rows of 32 floats
# in 6.9 us (BENCHMARKS.md, "Row gathers in Triton"); other sizes were not tried.
PROGRAM_ELEMENTS = 4096


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

