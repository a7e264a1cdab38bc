"""Plain SGD fused into the lookup's backward equals the optimizer's dense update."""

from __future__ import annotations

import copy

import pytest
import torch

from cce_bench.embeddings import make_embedding
from cce_bench.embeddings.sparse_update import enable_sparse_sgd
from tests.conftest import requires_cuda

METHODS = ["full", "hash", "ce", "cce", "qr", "hemb", "bloom", "ldim", "dhe", "tt"]


def sgd_steps(emb: torch.nn.Module, batches: list[torch.Tensor], lr: float, sparse: bool):
    if sparse:
        enable_sparse_sgd(emb, lr)
    optimizer = torch.optim.SGD(emb.parameters(), lr=lr)
    for ids in batches:
        optimizer.zero_grad(set_to_none=True)
        target = torch.linspace(-1, 1, emb.dim, device=ids.device)
        loss = ((emb(ids) - target) ** 2).sum()
        loss.backward()
        optimizer.step()
    return emb


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
def test_fused_sgd_equals_the_dense_update(method, device):
    torch.manual_seed(0)
    emb = make_embedding(500, 2048, 16, method, 4, seed=1).to(device)
    # Repeated ids in a batch: their updates must add up.
    batches = [torch.randint(0, 500, (64,), device=device) for _ in range(3)]
    batches[0][:8] = 7
    dense = sgd_steps(copy.deepcopy(emb), batches, 0.05, sparse=False)
    fused = sgd_steps(copy.deepcopy(emb), batches, 0.05, sparse=True)
    for (name, a), b in zip(dense.named_parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # The steps did train (so the comparison compares something).
    assert any(not torch.equal(a, b) for a, b in zip(fused.parameters(), emb.parameters()))


def test_a_fused_table_hands_the_optimizer_no_gradient():
    emb = make_embedding(1000, 1000 * 8, 8, "full", 1, seed=0)
    enable_sparse_sgd(emb, 0.1)
    before = emb.table.detach().clone()
    emb(torch.tensor([3, 3, 5])).sum().backward()
    assert emb.table.grad is None  # no dense (1000, 8) gradient was built
    changed = (emb.table.detach() != before).any(1).nonzero().flatten().tolist()
    assert changed == [3, 5]
    torch.testing.assert_close(emb.table.detach()[3], before[3] - 0.2)
    # Outside training (no grad), lookups read the table and change nothing.
    with torch.no_grad():
        emb(torch.tensor([1]))
    assert emb.table.grad is None
