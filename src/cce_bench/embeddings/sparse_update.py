"""Plain SGD on embedding tables, fused into the lookup's backward: cost per step follows the rows
a batch reads, never the table's size.

With plain SGD (no momentum, no weight decay) the update of a table read by rows r with output
gradient g is T[r] -= lr * g, summed over repeated rows: exactly what the optimizer would do with
the dense gradient, which is zero everywhere else. Building that dense gradient costs a pass over
the whole table per step: for Criteo Kaggle's full tables (33.8M x 16 floats, 2.2 GB) a zero
fill, an index_add and an optimizer pass over 2.2 GB each step, more than the rest of a DLRM
step. So, where the engine enables it, a lookup's backward applies the update itself with one
index_add and hands the optimizer no gradient for the table (the optimizer skips a parameter
whose grad is None). FBGEMM's table-batched embeddings fuse the optimizer into the backward
pass the same way.

Only leaf parameters read whole through `lookup` take this path; a parameter used any other way
as well still gets that part of its gradient through the optimizer (SGD is linear in the
gradient, so the two parts add up to the dense update).
"""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import all_gather_rows, shard
from ..kernels import gather_rows, scatter_add_rows

_ATTRIBUTE = "_sparse_sgd_lr"


def enable_sparse_sgd(module: nn.Module, lr: float) -> None:
    """Make every lookup of module's parameters apply plain SGD at lr in its backward pass."""
    for param in module.parameters():
        setattr(param, _ATTRIBUTE, float(lr))


def sparse_sgd_target(table: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """(the parameter, lr) when a lookup of table should update it in its backward pass: table
    is such a parameter, or a contiguous view of all of it (a reshape)."""
    if not table.requires_grad or not torch.is_grad_enabled():
        return None
    leaf = table if table._base is None else table._base
    lr = getattr(leaf, _ATTRIBUTE, None)
    if lr is None or not leaf.is_leaf or leaf.numel() != table.numel() or not table.is_contiguous():
        return None
    if table.is_cuda and torch.are_deterministic_algorithms_enabled():
        return None  # index_add_ on CUDA is atomic, not bitwise reproducible
    return leaf, lr


class SparseSGDLookup(torch.autograd.Function):
    """table[rows] whose backward does table[rows] -= lr * grad and returns no table gradient."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor, leaf: torch.Tensor,
                lr: float) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.leaf, ctx.lr, ctx.shape = leaf, lr, table.shape
        return gather_rows(table, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        if shard() is not None:  # --ddp: every replica applies every shard's rows
            rows, grad = all_gather_rows(rows, grad)
        with torch.no_grad():
            scatter_add_rows(ctx.leaf.view(ctx.shape), rows, grad, alpha=-ctx.lr)
        return None, None, None, None
