"""A stack of every method's tables reads what its members read and leaves them in charge of
their tensors (models/stacked.py)."""

from __future__ import annotations

import pytest
import torch

from cce_bench.embeddings import make_embedding, method_names
from cce_bench.models.stacked import stack_tables

VOCAB, DIM = 300, 16


def members(method: str, ppds=(64, 40, 128)) -> list[torch.nn.Module]:
    """Three tables of one method at three budgets."""
    return [make_embedding(VOCAB, ppd * DIM, DIM, method, 4, seed=s) for s, ppd in enumerate(ppds)]


@pytest.fixture(params=["apart", "padded"])
def padding(request, monkeypatch):
    """Members of differing shapes in buckets of their own shape ("apart", the CPU's choice)
    or all padded into one bucket ("padded", as on a GPU with no limit on a bucket), on the CPU."""
    from cce_bench.models import stacked_tables

    if request.param == "padded":
        monkeypatch.setattr(stacked_tables, "PAD_DEVICES", ("cpu", "cuda"))
        for cls in (stacked_tables.DeepHashStack, stacked_tables.LowDimensionalStack,
                    stacked_tables.TensorTrainStack):
            monkeypatch.setattr(cls, "bucket_elements", float("inf"))
    return request.param


def rows(tables, ids):
    return torch.stack([t(ids[r]) for r, t in enumerate(tables)])


def stack_as_alone(tables, ids, weights):
    """Stacks tables and checks that the stack's rows of ids (R, N) and its members' gradients
    of sum(rows x weights) are each member's own, to float tolerance. Returns the stack."""
    expected = rows(tables, ids)
    grads = [torch.autograd.grad((expected[r] * weights[r]).sum(), list(t.parameters()),
                                 retain_graph=True) for r, t in enumerate(tables)]
    stack = stack_tables(tables)
    got = stack(ids)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)
    flats = [flat for flat, _, _ in stack.slices]
    stack.member_grads(torch.autograd.grad((got * weights).sum(), flats))
    for t, mine in zip(tables, grads):
        for p, g in zip(t.parameters(), mine):
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    return stack


@pytest.mark.parametrize("method", method_names())
def test_a_stack_reads_its_members_rows(method, padding):
    tables = members(method)
    ids = torch.randint(0, VOCAB, (3, 50), generator=torch.Generator().manual_seed(0))
    expected = rows(tables, ids)
    stack = stack_tables(tables)
    assert torch.allclose(stack(ids), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(rows(tables, ids), expected)  # re-pointing changed no value
    assert stack.intact()


@pytest.mark.parametrize("method", method_names())
def test_member_gradients_are_their_own(method, padding):
    tables = members(method)
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 40, DIM, generator=torch.Generator().manual_seed(2))
    (rows(tables, ids) * weights).sum().backward()
    expected = [[p.grad.clone() if p.grad is not None else None for p in t.parameters()]
                for t in tables]
    for t in tables:
        t.zero_grad(set_to_none=True)
    stack = stack_tables(tables)
    flats = [flat for flat, _, _ in stack.slices]
    stack.member_grads(torch.autograd.grad((stack(ids) * weights).sum(), flats))
    for t, grads in zip(tables, expected):
        for p, g in zip(t.parameters(), grads):
            if g is None:
                assert p.grad is None
            else:
                assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)


def test_writes_to_a_member_reach_the_stack_until_it_replaces_a_tensor():
    tables = members("cce")
    stack = stack_tables(tables)
    tables[1].cluster()  # in place: tables, index and hash coefficients
    assert stack.intact()
    stack.refresh()  # the per-id hash cache follows the redrawn hashes
    ids = torch.randint(0, VOCAB, (3, 30))
    assert torch.allclose(stack(ids), rows(tables, ids), rtol=1e-5, atol=1e-7)

    pq = members("pq")
    stack = stack_tables(pq)
    pq[0].cluster()  # compresses: the full table is replaced by codebooks
    assert not stack.intact()


def test_only_one_method_and_shape_stacks():
    with pytest.raises(TypeError, match="one method"):
        stack_tables([make_embedding(VOCAB, 64 * DIM, DIM, m, 4) for m in ("hash", "ce")])
    with pytest.raises(TypeError, match="differ in parameters"):
        stack_tables([make_embedding(VOCAB, 64 * DIM, DIM, "dhe", hidden_layers=h)
                      for h in (1, 2, 1)])



@pytest.mark.parametrize("distribution", ["uniform", "gaussian"])
@pytest.mark.parametrize("cached", [True, False])
def test_a_wide_dhe_stack_runs_padded_and_reads_its_members(monkeypatch, distribution, cached):
    # Width 261 and 261 hashes: run_mlp pads both to 264 (and the encoding too, uncached).
    from cce_bench.embeddings.dhe import _aligned, mlp_params
    from cce_bench.models import stacked

    assert _aligned(261) == 264
    if not cached:
        monkeypatch.setattr(stacked, "CACHE_ELEMENTS", 0)
    tables = [make_embedding(VOCAB, mlp_params(261, 261, 2, DIM), DIM, "dhe",
                             distribution=distribution, seed=s) for s in range(3)]
    assert {t.width for t in tables} == {261}
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(3))
    weights = torch.randn(3, 40, DIM, generator=torch.Generator().manual_seed(4))
    stack = stack_as_alone(tables, ids, weights)
    assert (stack.encodings is not None) == cached
