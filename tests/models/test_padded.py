"""Members of differing shapes read as zero-padded blocks (models/padded.py), and the stacks of
dhe, tt and ldim over buckets of any make-up."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cce_bench.embeddings import make_embedding
from cce_bench.models import stacked_tables
from cce_bench.models.padded import PaddedBlocks, padded_shapes, plan_buckets, read_buckets
from tests.models.test_stacked import stack_as_alone

VOCAB, DIM = 300, 16


def brute_force(members, fixed):
    """The least cost over every split of the size-sorted members into contiguous runs."""
    order = sorted(range(len(members)), key=lambda i: (sum(map(math.prod, members[i])), i))
    best = math.inf
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        cost, start = 0.0, 0
        for end in [i + 1 for i, cut in enumerate(cuts) if cut] + [len(order)]:
            shapes = padded_shapes([members[i] for i in order[start:end]])
            cost += fixed + (end - start) * sum(map(math.prod, shapes))
            start = end
        best = min(best, cost)
    return best


def cost(members, buckets, fixed):
    return sum(fixed + len(b) * sum(map(math.prod, padded_shapes([members[i] for i in b])))
               for b in buckets)


@pytest.mark.parametrize("fixed", [0, 10, 100, 1000, math.inf])
def test_buckets_are_the_cheapest_split(fixed):
    ranks = [3, 1, 3, 8, 2, 5, 1]  # tt-like: an (n, R, d, R) core and an (n, R, d, 1) one
    members = [[(4, r, 2, r), (4, r, 2, 1)] for r in ranks]
    buckets = plan_buckets(members, fixed)
    assert sorted(i for b in buckets for i in b) == list(range(len(ranks)))
    assert all(b == sorted(b) for b in buckets)
    if fixed == math.inf:
        assert buckets == [list(range(len(ranks)))]
    else:
        assert cost(members, buckets, fixed) == brute_force(members, fixed)
    if fixed == 0:  # equal shapes together, nothing padded
        assert sorted(buckets) == [[0, 2], [1, 6], [3], [4], [5]]


@pytest.mark.parametrize("start", [0, 5])
def test_padded_blocks_hold_each_member_zero_padded_and_pass_back_its_gradient(start):
    shapes, shape = [(2, 3), (1, 1), (2, 1)], (2, 3)
    values = [torch.randn(s, generator=torch.Generator().manual_seed(i))
              for i, s in enumerate(shapes)]
    flat = torch.cat([torch.zeros(start)] + [v.reshape(-1) for v in values]
                     + [torch.zeros(3)]).requires_grad_()
    cpu = torch.device("cpu")
    around = [PaddedBlocks([(start,)], (start,), 0, cpu), PaddedBlocks(shapes, shape, start, cpu)]
    around.append(PaddedBlocks([(3,)], (3,), around[1].end, cpu))
    before, padded, after = read_buckets(flat, around)
    assert torch.equal(before.reshape(-1), flat[:start]) and torch.equal(after[0], flat[-3:])
    expected = torch.stack([F.pad(v, (0, 3 - v.shape[1], 0, 2 - v.shape[0])) for v in values])
    assert torch.equal(padded, expected)
    weights = torch.randn(padded.shape)
    (grad,) = torch.autograd.grad((padded * weights).sum() + before.sum() + 2 * after.sum(), flat)
    mine = torch.cat([weights[r, :s[0], :s[1]].reshape(-1) for r, s in enumerate(shapes)])
    assert torch.equal(grad, torch.cat([torch.ones(start), mine, torch.full((3,), 2.0)]))


def test_members_of_one_shape_are_read_without_a_copy():
    flat = torch.arange(12.0)
    (view,) = read_buckets(flat, [PaddedBlocks([(2, 3), (2, 3)], (2, 3), 0, torch.device("cpu"))])
    assert view.data_ptr() == flat.data_ptr() and view.shape == (2, 2, 3)


@pytest.mark.parametrize("method,dim", [("dhe", DIM), ("dhe", 12), ("tt", DIM), ("ldim", DIM)])
@pytest.mark.parametrize("as_on_a_gpu", [False, True])
def test_a_stack_of_mixed_buckets_reads_and_trains_its_members(method, dim, as_on_a_gpu,
                                                               monkeypatch):
    # Buckets out of member order, one of them padded and in the middle of the flat tensors;
    # as on a GPU, the padded bucket's dhe sizes are also rounded up to a multiple of 8 (dim
    # 12 to 16).
    monkeypatch.setattr(stacked_tables, "plan_buckets", lambda shapes, fixed: [[1], [0, 3], [2]])
    if as_on_a_gpu:
        monkeypatch.setattr(stacked_tables, "PAD_DEVICES", ("cpu", "cuda"))
    tables = [make_embedding(VOCAB, ppd * dim, dim, method, 4, seed=s)
              for s, ppd in enumerate((64, 40, 128, 200))]
    assert len({tuple(p.shape for p in t.parameters()) for t in tables}) == 4
    ids = torch.randint(0, VOCAB, (4, 30), generator=torch.Generator().manual_seed(0))
    weights = torch.randn(4, 30, dim, generator=torch.Generator().manual_seed(1))
    stack_as_alone(tables, ids, weights)
