"""Members of one stack whose parameters differ in shape, read as zero-padded blocks of a shared
shape (issue 15): dhe's widths, tt's rank and ldim's rank follow from the budget.

Such a stack splits its members into buckets (`plan_buckets`). In a bucket each member's
parameter is read as the leading block of a zero tensor of the bucket's shape, the elementwise
maximum of its members' shapes, and the bucket then runs the equal-shapes forward over a
leading run axis. The padding is not a parameter: `read_buckets` rebuilds it as zeros at
every forward, and its backward keeps only the members' own entries. So no padded entry is ever
trained, and none can reach a member's values whatever gradient it would get. Where a method's
padding enters a sum it adds exact zeros (a zero rank slice of a TT core, a zero unit of a DHE
layer, whose Mish or ReLU is 0), so the values are the members' own up to the order of float
sums (tests/models/test_stacked.py).

A bucket costs its launches whatever its size, and its padding costs work: `plan_buckets` picks
contiguous runs of the members sorted by size that minimise (buckets x `fixed` + padded
elements). fixed 0: only members of equal shapes share a bucket, nothing is padded.
"""

from __future__ import annotations

import math

import torch

Shapes = list[tuple[int, ...]]  # one member's parameter shapes, in parameter order


def padded_shapes(members: list[Shapes]) -> Shapes:
    """The elementwise maximum of the members' shapes, parameter by parameter."""
    return [tuple(max(sizes) for sizes in zip(*shapes)) for shapes in zip(*members)]


def plan_buckets(members: list[Shapes], fixed: float) -> list[list[int]]:
    """Member indices grouped into buckets, each in index order, the buckets by size.

    Dynamic programme over the members sorted by parameter count: bucket i..j costs fixed plus
    its padded elements, (j - i + 1) x sum of prod(padded shape); ties go to fewer buckets."""
    order = sorted(range(len(members)), key=lambda i: (sum(map(math.prod, members[i])), i))
    best: list[tuple[float, int, int]] = [(0.0, 0, 0)]  # prefix length -> (cost, buckets, start)
    for end in range(1, len(order) + 1):
        options = []
        for start in range(end):
            shapes = padded_shapes([members[i] for i in order[start:end]])
            cost = fixed + (end - start) * sum(map(math.prod, shapes))
            options.append((best[start][0] + cost, best[start][1] + 1, start))
        best.append(min(options))
    buckets, end = [], len(order)
    while end:
        start = best[end][2]
        buckets.append(sorted(order[start:end]))
        end = start
    return buckets[::-1]


class PaddedBlocks:
    """Where each member's entries of one parameter sit in its bucket's zero-padded block.

    The flat parameter holds the bucket's members back to back from `start` (flat order); the
    padded tensor is (members, *shape) of the bucket, each member's entries its leading block.
    None of the index tensors is built where no member needs padding (`read_buckets` reads the
    flat slice directly)."""

    def __init__(self, shapes: list[tuple[int, ...]], shape: tuple[int, ...], start: int,
                 device: torch.device):
        self.shape, self.start = (len(shapes), *shape), start
        self.end = start + sum(map(math.prod, shapes))
        self.source = self.pad = self.positions = None
        if all(s == shape for s in shapes):
            return
        blocks = []
        offset = start
        for s in shapes:
            block = torch.full(shape, -1, dtype=torch.int64)
            block[tuple(slice(0, n) for n in s)] = torch.arange(math.prod(s)).view(s) + offset
            blocks.append(block.reshape(-1))
            offset += math.prod(s)
        source = torch.cat(blocks)
        pad = source < 0
        # int32 where they fit: the copies read an index per element (4 bytes, not 8)
        index = torch.int32 if max(source.numel(), offset) < 2**31 else torch.int64
        self.positions = torch.nonzero(~pad).view(-1).to(index).to(device)  # they ascend
        self.source, self.pad = source.clamp(min=0).to(index).to(device), pad.to(device)


def read_buckets(flat: torch.Tensor, blocks: list[PaddedBlocks]) -> list[torch.Tensor]:
    """Every bucket's (members, *shape) tensor of one flat parameter, zero-padded where needed;
    the buckets' blocks cover flat back to back. One autograd node for all of them: views of
    slices would each give back a gradient of the whole flat tensor, to be summed."""
    if len(blocks) == 1 and blocks[0].source is None:
        return [flat.view(blocks[0].shape)]
    return list(_ReadBuckets.apply(flat, blocks))


class _ReadBuckets(torch.autograd.Function):
    """flat -> each bucket's padded tensor; the gradient keeps the members' entries."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, blocks: list[PaddedBlocks]):
        ctx.blocks, ctx.size = blocks, flat.numel()
        outs = []
        for b in blocks:
            if b.source is None:
                outs.append(flat[b.start:b.end].view(b.shape))
            else:
                outs.append(flat.index_select(0, b.source).masked_fill_(b.pad, 0).view(b.shape))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        full = torch.empty(ctx.size, dtype=grads[0].dtype, device=grads[0].device)
        for b, grad in zip(ctx.blocks, grads):
            mine = full[b.start:b.end]
            if b.source is None:
                mine.copy_(grad.reshape(-1))
            else:
                torch.index_select(grad.reshape(-1), 0, b.positions, out=mine)
        return full, None
