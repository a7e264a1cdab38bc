"""Runs trained together in a group give the rows they give alone."""

from __future__ import annotations

import pytest

from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from cce_bench.sweeps.work import group_runs, train_group, train_one
from tests.conftest import TINY_DATASET


class Quiet:
    def run_started(self, run): pass
    def epoch_done(self, run, record): pass
    def clustering(self, run, epoch, step): pass


def test_groups_share_dataset_and_batch_size_and_keep_order():
    runs = [RunConfig("a", "hash", 64, seed=s) for s in range(3)] + \
           [RunConfig("b", "hash", 64), RunConfig("b", "hash", 64, batch_size=128)]
    groups = group_runs(runs, group_size=2)
    assert [[r.dataset for r in g] for g in groups] == [["a", "a"], ["a"], ["b"], ["b"]]
    assert [r for g in groups for r in g] == runs


def test_a_group_gives_the_rows_of_its_runs_alone():
    data = load_dataset(TINY_DATASET)
    runs = [RunConfig(TINY_DATASET, m, 16 * 32, seed=s, epochs=2, batch_size=500)
            for m in ("cce", "hash") for s in (0, 1)]
    runs.append(RunConfig(TINY_DATASET, "cce", 1, epochs=2, batch_size=500))  # too small
    together = train_group(runs, data, "t", "cpu", Quiet())
    for run, rows in zip(runs, together):
        alone = train_one(run, data, "t", "cpu", Quiet())
        assert [r["status"] for r in rows] == [r["status"] for r in alone]
        for a, b in zip(rows, alone):
            assert a["run_id"] == b["run_id"]
            if a["status"] == "ok":
                assert a["val_bce"] == pytest.approx(b["val_bce"], rel=1e-5)
                assert a["val_auc"] == pytest.approx(b["val_auc"], abs=1e-6)


def test_stacking_groups_keep_each_stack_whole_where_it_fits():
    runs = [RunConfig("a", m, b, seed=s) for m in ("cce", "hash") for b in (64, 256)
            for s in range(3)]
    groups = group_runs(runs, group_size=8, stack=True)
    # cce's 6 runs are one stack and one group; hash's 6 would overflow it, so they start
    # their own; nothing is lost or repeated.
    assert [[(r.method, r.budget, r.seed) for r in g] for g in groups] == \
        [[(r.method, r.budget, r.seed) for r in runs[:6]], [(r.method, r.budget, r.seed)
                                                            for r in runs[6:]]]
    small = group_runs(runs, group_size=4, stack=True)
    assert [len(g) for g in small] == [4, 2, 4, 2]  # a stack larger than a group is split
    assert sorted(map(id, (r for g in small for r in g))) == sorted(map(id, runs))


def test_a_task_can_train_its_group_unstacked():
    from cce_bench.sweeps.work import Task

    assert Task(0, "s", []).stack  # stacked unless asked otherwise
    data = load_dataset(TINY_DATASET)
    runs = [RunConfig(TINY_DATASET, "ce", 16 * 32, seed=s, epochs=2, batch_size=500)
            for s in (0, 1)]
    stacked = train_group(runs, data, "t", "cpu", Quiet())
    alone = train_group(runs, data, "t", "cpu", Quiet(), stack=False)
    for a, b in zip(stacked, alone):
        assert [r["val_bce"] for r in a] == pytest.approx([r["val_bce"] for r in b], rel=1e-5)


def test_a_group_out_of_memory_trains_in_halves_with_the_rows_of_its_runs_alone(monkeypatch):
    import weakref

    import torch

    from cce_bench.sweeps import work

    data = load_dataset(TINY_DATASET)
    runs = [RunConfig(TINY_DATASET, "hash", b * 32, seed=s, epochs=2, batch_size=500)
            for b in (8, 16) for s in (0, 1, 2)]
    real, sizes, failed = work.train_many, [], []

    class Held:  # what a failed group holds on the device, kept alive by its frames
        pass

    def small_device(group, *args, **kwargs):  # a device that holds two runs at a time
        sizes.append(len(group))
        # The failed groups' memory is freed before the halves train (their tracebacks gone).
        assert all(ref() is None for ref in failed)
        held = Held()
        if len(group) > 2:
            failed.append(weakref.ref(held))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(group, *args, **kwargs)

    monkeypatch.setattr(work, "train_many", small_device)
    rows = train_group(runs, data, "t", "cpu", Quiet())
    assert sizes == [6, 3, 2, 3, 2]  # halves until they fit; a lone run trains with train()
    for run, mine in zip(runs, rows):
        alone = train_one(run, data, "t", "cpu", Quiet())
        assert [r["status"] for r in mine] == ["ok"] * len(alone)
        assert [r["val_bce"] for r in mine] == pytest.approx([r["val_bce"] for r in alone],
                                                             rel=1e-5)
