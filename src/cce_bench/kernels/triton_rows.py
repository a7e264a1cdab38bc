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
def _block(rows, n, width, BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    """This program's positions in rows, the table rows they name, the columns and the mask."""
    position = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = position < n
    row = tl.load(rows + position, mask=inside, other=0).to(tl.int64)
    column = tl.arange(0, WIDTH)
    return position, row, column, inside[:, None] & (column[None, :] < width)


@triton.jit
def _gather(table, rows, out, n, width, BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    position, row, column, mask = _block(rows, n, width, BLOCK, WIDTH)
    values = tl.load(table + row[:, None] * width + column[None, :], mask=mask)
    tl.store(out + position[:, None] * width + column[None, :], values, mask=mask)


@triton.jit
def _scatter_add(target, rows, values, alpha, n, width, BLOCK: tl.constexpr,
                 WIDTH: tl.constexpr):
    position, row, column, mask = _block(rows, n, width, BLOCK, WIDTH)
    update = tl.load(values + position[:, None] * width + column[None, :], mask=mask)
    tl.atomic_add(target + row[:, None] * width + column[None, :], update * alpha, mask=mask,
                  sem="relaxed")


def _shape(n: int, width: int) -> tuple[tuple[int], int, int]:
    padded = triton.next_power_of_2(width)
    block = max(16, PROGRAM_ELEMENTS // padded)
    return (triton.cdiv(n, block),), block, padded


def gather(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    n, width = rows.numel(), table.shape[1]
    out = torch.empty(n, width, dtype=table.dtype, device=table.device)
    if n:
        grid, block, padded = _shape(n, width)
        _gather[grid](table, rows, out, n, width, BLOCK=block, WIDTH=padded)
    return out


def scatter_add(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor,
                alpha: float) -> None:
    n, width = rows.numel(), target.shape[1]
    if n:
        grid, block, padded = _shape(n, width)
        _scatter_add[grid](target, rows, values, float(alpha), n, width, BLOCK=block,
                           WIDTH=padded)
