"""Stacked training gives every run the numbers it gets trained alone (issue 15): every method,
early stopping (one run stops while the others go on), clustering (cce, cce_robe), pq's
compression, and whichever runs share the stack."""

from __future__ import annotations

import pytest
import torch
import torch.utils._python_dispatch

from cce_bench import engine, steps
from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from cce_bench.embeddings import get_method, method_names
from cce_bench.engine import train, train_many
from cce_bench.models.stacked import stack_class
from cce_bench.stacking import plan_stacks, stack_key
from tests.conftest import TINY_DATASET, requires_cuda

# Budgets (ppd) that every method can take on the tiny set's 60 ids; qr and ldim need more.
BUDGETS = {"qr": [32, 64], "ldim": [32, 64]}


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(TINY_DATASET)


def stack_runs(method: str, epochs: int = 3, **fields) -> list[RunConfig]:
    """Two seeds at two budgets."""
    info = get_method(method)
    budgets = [0] if info.family == "uncompressed" else BUDGETS.get(method, [16, 8])
    settings = {"epochs": epochs, "batch_size": 500, "lr": 1e-2, "early_stop": 0} | fields
    return [RunConfig(TINY_DATASET, method, b * 32, seed=s, **settings)
            for b in budgets for s in (0, 1)]


def assert_same_records(stacked, alone, rel=1e-5, abs=1e-6, auc_abs=None):
    """auc_abs: AUC's own absolute tolerance (default abs), where few evaluation rows make
    one swapped pair of near-equal scores a visible step."""
    assert stacked.status == alone.status
    assert (stacked.params, stacked.table_params, stacked.buffer_bytes) == \
        (alone.params, alone.table_params, alone.buffer_bytes)
    assert [(r.epoch, r.step) for r in stacked.epochs] == [(r.epoch, r.step) for r in alone.epochs]
    for a, b in zip(stacked.epochs, alone.epochs):
        assert (a.train_bce, a.val_bce) == pytest.approx((b.train_bce, b.val_bce), rel=rel,
                                                         abs=abs)
        assert a.val_auc == pytest.approx(b.val_auc, rel=rel, abs=auc_abs or abs)


@pytest.mark.parametrize("method", method_names())
def test_stacked_training_equals_one_by_one(method, tiny):
    # 3 epochs: cce and cce_robe cluster after epochs 1 and 2, pq compresses after epoch 2.
    runs = stack_runs(method)
    # One stack, not runs side by side (dhe: one a budget, DeepHashStack.stacks_budgets).
    apart = not stack_class(get_method(method).cls).stacks_budgets
    assert len(plan_stacks(runs)) == (len({r.budget for r in runs}) if apart else 1)
    for run, result in zip(runs, train_many(runs, tiny, "cpu")):
        assert_same_records(result, train(run, tiny, "cpu", stepper="static"))


@pytest.mark.parametrize("method", ["dhe", "tt", "ldim"])
def test_runs_padded_into_one_bucket_train_as_alone(method, tiny, monkeypatch):
    # Padded as on a GPU, with no limit on a bucket: every budget in one zero-padded bucket
    # (dhe's budgets stacked together too, as sweeps do not).
    from cce_bench.models import stacked_tables

    monkeypatch.setattr(stacked_tables, "PAD_DEVICES", ("cpu", "cuda"))
    for cls in (stacked_tables.DeepHashStack, stacked_tables.TensorTrainStack,
                stacked_tables.LowDimensionalStack):
        monkeypatch.setattr(cls, "bucket_elements", float("inf"))
    monkeypatch.setattr(stacked_tables.DeepHashStack, "stacks_budgets", True)
    runs = stack_runs(method, epochs=2)
    for run, result in zip(runs, train_many(runs, tiny, "cpu")):
        assert_same_records(result, train(run, tiny, "cpu", stepper="static"))
    from cce_bench.engine import device_splits, run_states

    cpu = torch.device("cpu")
    model = run_states(runs, tiny, device_splits(tiny, cpu), cpu, "static", True)[0].epochs \
        .stepper.model
    for table in (model.user, model.item):  # one bucket, and padded
        assert len(table.buckets) == 1
        assert any(blocks[0].source is not None for blocks in table.blocks.values())


@pytest.mark.parametrize("method", ["hash", "cce", "full"])
def test_a_run_that_stops_early_leaves_the_others_unchanged(method, tiny):
    # lr 0.1 overfits the tiny set at different epochs per run (measured: 2 to 5 of 8).
    runs = stack_runs(method, epochs=8, lr=0.1, early_stop=0.001)
    stacked = train_many(runs, tiny, "cpu")
    alone = [train(run, tiny, "cpu", stepper="static") for run in runs]
    assert len({len(r.epochs) for r in alone}) > 1  # they stop at different epochs
    assert min(len(r.epochs) for r in alone) < 8
    for a, b in zip(stacked, alone):
        assert_same_records(a, b)


def test_a_runs_numbers_do_not_depend_on_its_stack_mates(tiny):
    mine = RunConfig(TINY_DATASET, "cce", 16 * 32, seed=5, epochs=3, batch_size=500, lr=1e-2)
    first = train_many([mine] + stack_runs("cce", lr=1e-2, early_stop=0.01), tiny, "cpu")[0]
    mates = [RunConfig(TINY_DATASET, "cce", b * 32, seed=9, epochs=3, batch_size=500, lr=1e-2)
             for b in (4, 32, 64)]
    second = train_many(mates + [mine], tiny, "cpu")[-1]
    assert_same_records(first, second, rel=1e-6, abs=1e-7)


# k-means on the torch backend (batched over a stack's runs; auto is faiss on the CPU), on
# 4 points a centroid: budgets 16, 8 and 2 ppd have k = 8, 4, 1 rows on 32, 16, 4 points.
TORCH_KMEANS = {"kmeans_backend": "torch", "points_per_centroid": 4}


def torch_kmeans_runs(method: str, **fields) -> list[RunConfig]:
    """Two seeds at three budgets, whose k-means problems differ in k and points."""
    settings = {"epochs": 3, "batch_size": 500, "lr": 1e-2, "early_stop": 0,
                "method_opts": TORCH_KMEANS} | fields
    return [RunConfig(TINY_DATASET, method, b * 32, seed=s, **settings)
            for b in (16, 8, 2) for s in (0, 1)]


def stepped_stack(runs: list[RunConfig], data) -> tuple[list, list]:
    """The runs' states as one stack after a step, and a copy of each run's model alone."""
    import copy

    from cce_bench.engine import device_splits, run_states

    cpu = torch.device("cpu")
    states = run_states(runs, data, device_splits(data, cpu), cpu, "static", True)
    stack = states[0].epochs.stepper
    for state in states:
        state.epochs.prepare(state.shuffle)
    stack.step()  # the members' tensors are views of the stack's from here on
    return states, [copy.deepcopy(state.model) for state in states]


@pytest.mark.parametrize("method", ["cce", "cce_robe"])
def test_a_stacks_clustering_round_is_one_k_means_batch_with_each_runs_result_alone(
        method, tiny, monkeypatch):
    from cce_bench.embeddings import kmeans as km
    from cce_bench.engine import cluster_all

    batches = []
    real = km._kmeans_torch
    monkeypatch.setattr(km, "_kmeans_torch", lambda jobs: batches.append(len(jobs)) or real(jobs))
    states, alone = stepped_stack(torch_kmeans_runs(method), tiny)
    optimizer = states[0].optimizer
    for step in (1, 2):  # two rounds: the second starts from the first's index and hashes
        batches.clear()
        for state in states:
            state.epochs.cluster(step)
        assert batches == [2 * len(states)]  # every table of every run: one batch
        for model in alone:
            cluster_all(model, torch.optim.AdamW(model.parameters()))
        for state, model in zip(states, alone):
            for (name, ours), theirs in zip(state.model.state_dict().items(),
                                            model.state_dict().values()):
                # index, hashes and rounds exactly; tables up to float sums (CPU: bitwise)
                assert torch.allclose(ours.double(), theirs.double(), atol=1e-6), name
            for table in (state.model.user, state.model.item):  # (f): fresh optimizer state
                for param in (table.table0, table.table1):
                    assert all(not v.any() for v in optimizer.state[param].values())


@pytest.mark.parametrize("method", ["cce", "cce_robe"])
def test_runs_clustered_in_one_batch_train_as_alone(method, tiny, monkeypatch):
    from cce_bench import stacking

    jobs = []
    real = stacking.kmeans_many
    monkeypatch.setattr(stacking, "kmeans_many", lambda js: jobs.append(len(js)) or real(js))
    runs = torch_kmeans_runs(method)
    stacked = train_many(runs, tiny, "cpu")
    assert jobs == [12, 12]  # after epochs 1 and 2: 6 runs x 2 tables, one call
    for run, result in zip(runs, stacked):
        assert_same_records(result, train(run, tiny, "cpu", stepper="static"))


def test_a_run_that_stopped_early_is_not_clustered_with_its_stack(tiny, monkeypatch):
    from cce_bench import stacking

    jobs = []
    real = stacking.kmeans_many
    monkeypatch.setattr(stacking, "kmeans_many", lambda js: jobs.append(len(js)) or real(js))
    runs = torch_kmeans_runs("cce", epochs=8, lr=0.1, early_stop=0.001)
    stacked = train_many(runs, tiny, "cpu")
    alone = [train(run, tiny, "cpu", stepper="static") for run in runs]
    epochs = [len(r.epochs) for r in alone]
    assert min(epochs) < 6 < max(epochs)  # some stop while the others still cluster
    for a, b in zip(stacked, alone):
        assert_same_records(a, b)
    # The schedule clusters after epochs 1..6 (cluster_until 0.75 of 8), every run that got
    # to epoch e (it clusters, then stops): 2 tables each; a run that stopped is not in it.
    assert jobs == [2 * sum(e <= n for n in epochs) for e in range(1, 7) if e <= max(epochs)]


def test_a_run_that_diverges_as_its_stack_clusters_keeps_its_tables(tiny, monkeypatch):
    from cce_bench import stacking
    from cce_bench.embeddings.cce import RoundUpdate

    jobs, finished = [], []
    real, apply = stacking.kmeans_many, RoundUpdate.apply
    monkeypatch.setattr(stacking, "kmeans_many", lambda js: jobs.append(len(js)) or real(js))
    monkeypatch.setattr(RoundUpdate, "apply", lambda u: finished.append(1) or apply(u))
    # lr 0.55 explodes cce on the tiny set for some seeds and budgets (measured: 3 of 6, at
    # epochs 1 to 3 of 4, while the others cluster after epochs 1 to 3).
    runs = [RunConfig(TINY_DATASET, "cce", b * 32, seed=s, epochs=4, batch_size=500, lr=0.55,
                      early_stop=0, method_opts={"kmeans_backend": "torch"})
            for b in (4, 16, 64) for s in (0, 1)]
    stacked = train_many(runs, tiny, "cpu")
    assert sum(jobs) > len(finished)  # prepared for a run that diverged, never finished
    alone = [train(run, tiny, "cpu", stepper="static") for run in runs]
    assert {r.status for r in alone} == {"ok", "diverged"}
    for a, b in zip(stacked, alone):
        assert a.status == b.status and len(a.epochs) == len(b.epochs)
        if b.status == "ok":  # measured 2.4e-5 apart in val BCE, as before batching
            assert_same_records(a, b, rel=1e-4)


def test_stacked_and_unstacked_lockstep_agree(tiny):
    runs = stack_runs("ce") + stack_runs("hash")
    for a, b in zip(train_many(runs, tiny, "cpu"), train_many(runs, tiny, "cpu", stack=False)):
        assert_same_records(a, b)


def test_which_runs_stack():
    base = RunConfig("d", "cce", 512)
    same = [RunConfig("d", "cce", b, seed=s) for b in (512, 2048) for s in (0, 1)]
    assert len({stack_key(r) for r in [base, *same]}) == 1
    assert stack_key(RunConfig("d", "cce", 512, lr=0.1)) != stack_key(base)
    assert stack_key(RunConfig("d", "hash", 512)) != stack_key(base)
    assert stack_key(RunConfig("d", "cce", 512, n_chunks=2)) != stack_key(base)
    # tt's ranks follow from the budget: its stacks pad them (models/padded.py).
    assert stack_key(RunConfig("d", "tt", 1024, seed=1)) == stack_key(RunConfig("d", "tt", 512))
    assert stack_key(RunConfig("d", "tt", 512, lr=0.1)) != stack_key(RunConfig("d", "tt", 512))
    # dhe's stacks hold one budget's seeds (DeepHashStack.stacks_budgets).
    assert stack_key(RunConfig("d", "dhe", 512, seed=1)) == stack_key(RunConfig("d", "dhe", 512))
    assert stack_key(RunConfig("d", "dhe", 1024)) != stack_key(RunConfig("d", "dhe", 512))
    # DLRM runs stack too, apart from GMF's (tests/test_stacked_dlrm.py).
    assert stack_key(RunConfig("d", "cce", 512, model="dlrm")) != stack_key(base)


def test_plan_keeps_order_and_caps_the_stack_size():
    runs = [RunConfig("d", m, 512, seed=s) for m in ("cce", "hash") for s in range(3)]
    runs.insert(1, RunConfig("d", "cce", 512, model="dlrm"))  # not with GMF runs
    assert plan_stacks(runs) == [[0, 2, 3], [1], [4, 5, 6]]
    assert plan_stacks(runs, max_size=2) == [[0, 2], [3], [1], [4, 5], [6]]


def test_stacked_runs_are_scored_on_the_test_split_as_alone(tiny):
    from dataclasses import replace

    from cce_bench.data import InteractionSplit

    half = len(tiny.val) // 2
    val, test = (InteractionSplit(tiny.val.users[s], tiny.val.items[s], tiny.val.labels[s])
                 for s in (slice(0, half), slice(half, None)))
    data = replace(tiny, val=val, test=test)
    runs = stack_runs("hash")
    for run, result in zip(runs, train_many(runs, data, "cpu")):
        alone = train(run, data, "cpu", stepper="static")
        for a, b in zip(result.epochs, alone.epochs):
            assert (a.test_bce, a.test_auc) == pytest.approx((b.test_bce, b.test_auc), rel=1e-5)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("method", method_names())
def test_stacks_in_a_cuda_graph_equal_runs_alone(method, tiny, deterministic):
    # One graph replays every stack's step. Atomic gradient sums on the GPU reorder float
    # additions, and k-means turns a reordered last bit into a different assignment (measured:
    # cce after another test's runs, val BCE apart by more than 1e-3), so the sums are the
    # sorted, reproducible ones; the tolerance is still the CUDA one of test_steps.py.
    runs = stack_runs(method) + stack_runs("hash", lr=1e-1)  # a second stack in the graph
    for run, result in zip(runs, train_many(runs, tiny, "cuda")):
        assert_same_records(result, train(run, tiny, "cuda", stepper="plain"), 1e-3, 1e-4)




@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("method", ["full", "hash", "ce", "qr", "hemb", "robe", "pq"])
def test_stacks_on_cuda_with_atomic_sums_stay_close_to_runs_alone(method, tiny):
    # Without the deterministic fixture: the Triton row gathers and atomic scatter-adds
    # (kernels/) on both sides, whose sums differ from each other only in order.
    runs = stack_runs(method)
    for run, result in zip(runs, train_many(runs, tiny, "cuda")):
        assert_same_records(result, train(run, tiny, "cuda", stepper="plain"), 1e-3, 1e-4)

@requires_cuda
@pytest.mark.gpu
def test_a_stack_on_cuda_recaptures_when_a_run_stops(tiny, deterministic, monkeypatch):
    # The hash stack trains all 8 epochs: it is recaptured whenever a cce run stops, without
    # warm-up steps of its own (steps.capture_steps warms only new or moved steppers), and
    # still trains as alone.
    stopping = stack_runs("cce", epochs=8, lr=0.1, early_stop=0.001)
    runs = stopping + stack_runs("hash", epochs=8, lr=1e-1)
    alone = [train(run, tiny, "cuda", stepper="plain") for run in runs]
    assert len({len(r.epochs) for r in alone[:len(stopping)]}) > 1
    captures, warmed = [], []
    capture, snapshot = steps.capture_steps, steps._snapshot

    def counting(steppers):
        captures.append(len(steppers))
        return capture(steppers)

    def counting_snapshot(model, optimizer):
        warmed.append(model)
        return snapshot(model, optimizer)

    monkeypatch.setattr(engine, "capture_steps", counting)
    monkeypatch.setattr(steps, "_snapshot", counting_snapshot)
    for a, b in zip(train_many(runs, tiny, "cuda"), alone):
        assert_same_records(a, b, 1e-3, 1e-4)
    assert len(captures) > 1 and captures[1] == 2  # recaptured with both stacks in the graph
    assert len(warmed) < sum(captures)  # and the unchanged one not warmed up again


def test_runs_that_diverge_leave_the_stack_as_they_leave_alone(tiny):
    # lr 1.5 explodes hash on the tiny set for some seeds and budgets (measured: 3 of 6, after
    # one or two epochs), not for the others.
    runs = [RunConfig(TINY_DATASET, "hash", b * 32, seed=s, epochs=4, batch_size=500, lr=1.5,
                      early_stop=0) for b in (4, 16, 64) for s in (0, 1)]
    stacked = train_many(runs, tiny, "cpu")
    alone = [train(run, tiny, "cpu", stepper="static") for run in runs]
    assert {r.status for r in alone} == {"ok", "diverged"}
    for a, b in zip(stacked, alone):
        assert a.status == b.status and len(a.epochs) == len(b.epochs)
        if b.status == "ok":
            assert_same_records(a, b)


@pytest.mark.parametrize("method,fields", [
    ("cce", {"eval_every": 2}),  # records, and loss sums read, in the middle of an epoch
    ("cce", {"cluster_every": 3, "cluster_until": 0.6}),  # clustering on a step schedule
    ("pq", {"cluster_every": 4, "eval_every": 3}),  # compressing mid-epoch rebuilds the stack
    ("qr", {"method_opts": {"combine": "concat"}}),
    ("hnet", {"method_opts": {"signed": True}}),
    ("cce", {"method_opts": {"residual_init": "zero"}}),
    ("dhe", {"method_opts": {"distribution": "gaussian"}}),
])
def test_schedules_and_method_options_stack_too(method, fields, tiny):
    runs = stack_runs(method, **fields)
    for run, result in zip(runs, train_many(runs, tiny, "cpu")):
        assert_same_records(result, train(run, tiny, "cpu", stepper="static"))


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Backend op calls below autograd (a proxy for kernel launches), views left out."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        view = any(r.alias_info is not None and not r.alias_info.is_write
                   for r in func._schema.returns)
        name = func.overloadpacket.__name__
        self.calls += not view and not name.startswith(("empty", "_record_function"))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["hash", "cce", "full"])
def test_a_stacked_step_of_eight_runs_launches_fewer_ops_than_one_run_alone(method, tiny,
                                                                             monkeypatch):
    from cce_bench import engine
    from cce_bench.engine import device_splits, run_states

    def fused(model, run, device):  # the engine's AdamW on CUDA: one launch for all tensors
        return torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay,
                                 fused=True)

    monkeypatch.setattr(engine, "make_optimizer", fused)
    runs = [RunConfig(TINY_DATASET, method, 0 if method == "full" else (8 + s) * 32, seed=s,
                      epochs=2, batch_size=500) for s in range(8)]
    splits = device_splits(tiny, torch.device("cpu"))
    calls = []
    for group, stack in ((runs[:1], False), (runs, True)):
        states = run_states(group, tiny, splits, torch.device("cpu"), "static", stack)
        stepper = states[0].epochs.stepper
        for state in states:
            state.epochs.prepare(state.shuffle)
        stepper.step()  # the optimizer's state exists from here on
        with _CountOps() as count:
            stepper.step()
        calls.append(count.calls)
    assert calls[1] < calls[0]  # measured: hash 40 vs 97, cce 54 vs 119 (fused AdamW)


def test_a_stacks_clustering_round_launches_fewer_ops_than_its_runs_alone(tiny):
    from cce_bench.engine import cluster_all

    states, alone = stepped_stack(torch_kmeans_runs("cce"), tiny)
    with _CountOps() as stacked:
        for state in states:
            state.epochs.cluster(1)
    with _CountOps() as one_by_one:
        for model in alone:
            cluster_all(model, torch.optim.AdamW(model.parameters()))
    # measured: 1,920 vs 11,640 op calls (6 runs x 2 tables: each stack's points read in one
    # forward, one batch of 12 k-means jobs, each stack's updates computed at once); 3,184
    # when each table prepared and finished its own round
    assert stacked.calls < one_by_one.calls / 5


def test_a_stack_mates_non_finite_tables_do_not_stop_a_runs_faiss_round(tiny):
    # A run whose tables went non-finite at a clustering step (it diverged: alone it would not
    # cluster) must not hand its points to faiss, which refuses NaN, on its mates' behalf.
    pytest.importorskip("faiss")
    from cce_bench.engine import cluster_all

    runs = [RunConfig(TINY_DATASET, "cce", 16 * 32, seed=s, epochs=3, batch_size=500,
                      lr=1e-2, early_stop=0, method_opts={"kmeans_backend": "faiss"})
            for s in (0, 1)]
    states, alone = stepped_stack(runs, tiny)
    with torch.no_grad():
        states[0].model.user.table0.fill_(float("nan"))  # run 0 diverged
    states[1].epochs.cluster(1)  # only run 1 asks, as train_many has it
    cluster_all(alone[1], torch.optim.AdamW(alone[1].parameters()))
    for ours, theirs in zip(states[1].model.state_dict().values(),
                            alone[1].state_dict().values()):
        assert torch.allclose(ours.double(), theirs.double(), atol=1e-6)


def test_pq_runs_of_one_seed_train_once_until_they_compress(tiny, monkeypatch):
    # Before compressing, pq is a full table whatever its budget: the budgets of one seed take
    # the same steps, so a stack trains one of them and the others fork from it when they
    # compress (3 epochs: compression after epoch 2).
    from cce_bench.stacking import StackedEpoch

    runs = [RunConfig(TINY_DATASET, "pq", b * 32, seed=s, epochs=3, batch_size=500, lr=1e-2,
                      early_stop=0) for s in (0, 1) for b in (8, 16, 32)]
    built, sync = [], StackedEpoch._sync

    def recording(self):
        sync(self)
        if not built or built[-1] != self.built_for:
            built.append(list(self.built_for))

    monkeypatch.setattr(StackedEpoch, "_sync", recording)
    stacked = train_many(runs, tiny, "cpu")
    assert built == [[0, 3], [0, 1, 2, 3, 4, 5]]  # the seeds' first budgets, then all six
    for run, result in zip(runs, stacked):
        alone = train(run, tiny, "cpu", stepper="static")
        assert_same_records(result, alone)
        assert (result.table_params, result.params) == (alone.table_params, alone.params)


def test_only_a_post_training_methods_equal_runs_are_twins(tiny):
    from cce_bench.models import build_model
    from cce_bench.stacking import find_twins

    def models(runs):
        out = []
        for run in runs:
            torch.manual_seed(run.seed)
            out.append(build_model(run, tiny))
        return out

    pq = [RunConfig(TINY_DATASET, "pq", b * 32, seed=s, epochs=3) for s in (0, 1)
          for b in (8, 16)]
    assert find_twins(pq, models(pq)) == {1: 0, 3: 2}  # budgets of one seed
    other_lr = [pq[0], RunConfig(TINY_DATASET, "pq", 16 * 32, seed=0, epochs=3, lr=0.5)]
    assert find_twins(other_lr, models(other_lr)) == {}
    hashed = [RunConfig(TINY_DATASET, "hash", b * 32, epochs=3) for b in (8, 16)]
    assert find_twins(hashed, models(hashed)) == {}  # its tables differ from the start
    trained = models(pq[:2])
    with torch.no_grad():
        next(trained[1].parameters()).add_(1.0)  # equal configurations, unequal models
    assert find_twins(pq[:2], trained) == {}
