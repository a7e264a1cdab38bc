"""Stacked DLRM training (models/stacked_dlrm.py) gives every run the numbers it gets trained
alone: every method of the paper's Kaggle grid at two caps and two seeds, with its evaluation
and clustering schedule, pq's compression, early stopping, and on a GPU in a CUDA graph."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cce_bench.config import RunConfig
from cce_bench.engine import fuse_sparse_updates, train, train_many
from cce_bench.models import build_model
from cce_bench.models.stacked_dlrm import StackedDLRM
from cce_bench.stacking import plan_stacks, stack_key
from tests.conftest import requires_cuda
from tests.models.test_dlrm import dlrm_run as base_run
from tests.models.test_dlrm import tiny_criteo  # noqa: F401 - the fixture
from tests.test_stacked import assert_same_records


def dlrm_run(method: str, budget: int, **fields) -> RunConfig:
    """test_dlrm's runs, evaluated and clustered every 30 steps through the first half."""
    return base_run(method, budget, **({"eval_every": 30, "cluster_every": 30,
                                        "cluster_until": 0.5} | fields))


def grid(method: str, **fields) -> list[RunConfig]:
    """Two caps (160 keeps most tables compressed, 640 fewer) x two seeds; full runs at 0."""
    caps = [0] if method == "full" else [160, 640]
    return [dlrm_run(method, cap, seed=s, **fields) for cap in caps for s in (0, 1)]


def assert_same_dlrm_records(stacked, alone, rel=1e-5, abs=1e-6):
    """test_stacked's check, the test split's points too, and AUC to within one swapped pair
    of the ~600 evaluation rows (about 2e-5): a float rounding can swap two near-equal scores."""
    assert_same_records(stacked, alone, rel, abs, auc_abs=max(abs, 1e-4))
    for a, b in zip(stacked.epochs, alone.epochs):
        assert a.test_bce == pytest.approx(b.test_bce, rel=rel, abs=abs)
        assert a.test_auc == pytest.approx(b.test_auc, rel=rel, abs=max(abs, 1e-4))


@pytest.mark.parametrize("method", ["full", "hash", "ce", "cce", "dhe", "pq", "tt"])
def test_stacked_dlrm_training_equals_one_by_one(method, tiny_criteo):
    # 2 epochs, evaluated and clustered every 30 steps through the first half: cce clusters,
    # pq compresses at its last round.
    runs = grid(method, **({"epochs": 1} if method == "tt" else {}))  # tt: slow on a CPU
    assert len(plan_stacks(runs)) == 1  # one stack, caps and seeds together
    for run, result in zip(runs, train_many(runs, tiny_criteo, "cpu")):
        assert_same_dlrm_records(result, train(run, tiny_criteo, "cpu", stepper="static"))


def test_stacks_and_a_lone_run_in_one_group_train_as_alone(tiny_criteo):
    # As a sweep groups the paper's grid: a stack per method and the full table on its own.
    runs = grid("ce", epochs=1) + [dlrm_run("full", 0, epochs=1)] + grid("pq", epochs=1)
    assert [len(g) for g in plan_stacks(runs)] == [4, 1, 4]
    for run, result in zip(runs, train_many(runs, tiny_criteo, "cpu")):
        assert_same_dlrm_records(result, train(run, tiny_criteo, "cpu", stepper="static"))


def test_stacked_bf16_runs_equal_themselves_alone(tiny_criteo):
    runs = grid("hash", precision="bf16", epochs=1)
    for run, result in zip(runs, train_many(runs, tiny_criteo, "cpu")):
        assert_same_dlrm_records(result, train(run, tiny_criteo, "cpu", stepper="static"),
                                 rel=1e-3, abs=1e-4)


def test_a_stacked_run_that_stops_early_leaves_the_others_unchanged(tiny_criteo):
    # lr 0.5 with a tolerance that stops a run at its first evaluation without a gain.
    runs = grid("cce", epochs=4, lr=0.5, early_stop=0.001)
    alone = [train(run, tiny_criteo, "cpu", stepper="static") for run in runs]
    assert len({len(r.epochs) for r in alone}) > 1  # they stop at different points
    for a, b in zip(train_many(runs, tiny_criteo, "cpu"), alone):
        assert_same_dlrm_records(a, b)


def test_dlrm_runs_of_one_method_stack_whatever_their_caps():
    base = dlrm_run("cce", 160)
    assert stack_key(dlrm_run("cce", 1600, seed=3)) == stack_key(base)
    assert stack_key(dlrm_run("hash", 160)) != stack_key(base)
    assert stack_key(dlrm_run("cce", 160, lr=0.2)) != stack_key(base)
    assert stack_key(dlrm_run("cce", 160, top_mlp="64-32-1")) != stack_key(base)


def test_the_stack_computes_each_members_logits_and_gradients(tiny_criteo):
    runs = [dlrm_run("cce", 160, seed=0), dlrm_run("cce", 640, seed=1),
            dlrm_run("cce", 4000, seed=2)]  # 4000: more tables stay full
    models = []
    for run in runs:
        torch.manual_seed(run.seed)
        models.append(build_model(run, tiny_criteo))
    alone = copy.deepcopy(models)
    split = tiny_criteo.tensors("train")
    gen = torch.Generator().manual_seed(0)
    rows = torch.stack([torch.randperm(len(split), generator=gen)[:64] for _ in runs])
    labels = split.labels[rows]
    stack = StackedDLRM(models)
    logits = stack(split.dense[rows], split.categorical[rows])  # (R, B)
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    stack.backward(losses.sum())
    for r, model in enumerate(alone):
        own = model(split.dense[rows[r]], split.categorical[rows[r]])
        torch.testing.assert_close(logits[r], own, rtol=1e-5, atol=1e-6)
        F.binary_cross_entropy_with_logits(own, labels[r]).backward()
        for (name, mine), (_, theirs) in zip(models[r].named_parameters(),
                                             model.named_parameters()):
            assert mine.grad is not None, name  # every parameter gets its gradient
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6,
                                       msg=name)


def test_fused_table_updates_reach_each_members_own_tables(tiny_criteo):
    runs = [dlrm_run("hash", 160, seed=0), dlrm_run("hash", 640, seed=1)]
    models = []
    for run in runs:
        torch.manual_seed(run.seed)
        models.append(build_model(run, tiny_criteo))
        fuse_sparse_updates(models[-1], run)
    before = [[p.detach().clone() for p in m.embeddings()[0].parameters()] for m in models]
    split = tiny_criteo.tensors("train")
    rows = torch.arange(128).view(2, 64)
    stack = StackedDLRM(models)
    logits = stack(split.dense[rows], split.categorical[rows])
    stack.backward(F.binary_cross_entropy_with_logits(logits, split.labels[rows]))
    for model, old in zip(models, before):
        now = list(model.embeddings()[0].parameters())
        assert any(not torch.equal(a, b) for a, b in zip(now, old))  # updated in backward


@requires_cuda
@pytest.mark.parametrize("method", ["cce", "pq", "dhe"])
def test_stacked_dlrm_in_a_cuda_graph_equals_runs_alone(method, tiny_criteo, deterministic):
    # One graph replays the stack's step, each member's lookup on a branch of its own. The
    # sums are the sorted, reproducible ones (which also turns the fused table updates off):
    # with atomic sums k-means turns a reordered last bit into another assignment (measured on
    # an H200: cce's stack and its runs alone apart by more than 1e-3, as for GMF's stacks).
    # A lone full-table run and a second stack share the graph, as in the paper grid's group.
    runs = grid(method) + [dlrm_run("full", 0)] + grid("hash")
    for run, result in zip(runs, train_many(runs, tiny_criteo, "cuda")):
        assert_same_dlrm_records(result, train(run, tiny_criteo, "cuda"), rel=1e-3, abs=1e-4)


@requires_cuda
@pytest.mark.parametrize("method", ["hash", "pq", "dhe"])
def test_stacked_dlrm_with_fused_updates_on_cuda_stays_close_to_runs_alone(method, tiny_criteo):
    # Atomic row sums and the fused table updates on both sides, in the branches of one graph.
    runs = grid(method)
    for run, result in zip(runs, train_many(runs, tiny_criteo, "cuda")):
        assert_same_dlrm_records(result, train(run, tiny_criteo, "cuda"), rel=1e-3, abs=1e-4)
