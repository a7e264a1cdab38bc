"""Row gathers and scatter-adds for narrow 2-d tables, in Triton on CUDA.

torch 2.11 reads rows of a 2-d CUDA tensor through one kernel for index_select, advanced
indexing, torch.gather and embedding alike, and that kernel gives every index its own thread
block. For the narrow rows of compressed tables the block launches are the cost: on an H200,
147,456 rows of 32 floats took 91 us and 589,824 rows of 8 floats 358 us, a third of a stacked
GMF step. A Triton program here moves a block of rows at once: 6.9 and 8.9 us for the same reads
(BENCHMARKS.md, "Row gathers in Triton"). The scatter-add (a lookup's backward) is the same
layout with atomic adds: in the stacked hash step 29 us a call, where index_add_ took 51.

`gather_rows` and `scatter_add_rows` fall back to torch's index_select and index_add_ on the
CPU, where triton is missing, for rows wider than WIDE_ROW_BYTES (a block per row suits them)
and for layouts the kernels do not take. Unlike index_select the kernels do not check the rows
against the table's length: callers pass rows they computed in range (hashes modulo the rows, or
ids the model checked), and tests compare the two paths.
"""

from __future__ import annotations

import functools

import torch

# Rows at least this wide (bytes) are read by torch's one-block-per-row kernel, which suits them.
WIDE_ROW_BYTES = 1024
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int64)


@functools.cache
def _kernels():
    """The Triton kernels module, or None where triton cannot be imported."""
    try:
        from . import triton_rows
    except ImportError:
        return None
    return triton_rows


def _fast(table: torch.Tensor, rows: torch.Tensor) -> bool:
    return (table.is_cuda and table.dim() == 2 and table.is_contiguous()
            and table.dtype in _DTYPES and rows.dim() == 1 and rows.is_contiguous()
            and rows.dtype in (torch.int32, torch.int64) and rows.device == table.device
            and 0 < table.shape[1] * table.element_size() < WIDE_ROW_BYTES
            and _kernels() is not None)


def gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[rows] for a 2-d table and 1-d rows: (N, width). Not differentiable (see lookup)."""
    if _fast(table, rows):
        return _kernels().gather(table, rows)
    return table.index_select(0, rows)


def scatter_add_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor,
                     alpha: float = 1.0) -> torch.Tensor:
    """target[rows[i]] += alpha * values[i] in place, repeated rows summed (atomically on
    CUDA: the order of the sums, and so the last bit, may vary between runs)."""
    values = values.to(target.dtype)
    if (_fast(target, rows) and target.dtype == torch.float32
            and values.shape == (len(rows), target.shape[1])):
        _kernels().scatter_add(target, rows, values.contiguous(), alpha)
        return target
    return target.index_add_(0, rows, values, alpha=alpha)


def take_rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table[ids] for a 2-d table and ids of any shape: (*ids.shape, width). Not differentiable
    (buffers: hash caches, CCE's index, pq's codes)."""
    return gather_rows(table, ids.reshape(-1)).view(*ids.shape, table.shape[1])
