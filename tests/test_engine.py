"""The training engine on a tiny synthetic set: schedule, records, stopping."""

from __future__ import annotations

import math

import pytest
import torch

from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from cce_bench.engine import _should_stop, cluster_all, train
from cce_bench.errors import ConfigError
from tests.conftest import TINY_DATASET


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(TINY_DATASET)


def test_one_record_per_epoch_and_clustering_on_schedule(tiny):
    run = RunConfig(TINY_DATASET, "cce", budget=8 * 32, epochs=4, batch_size=256, early_stop=0)
    result = train(run, tiny, "cpu")
    assert result.status == "ok"
    assert [r.epoch for r in result.epochs] == [1, 2, 3, 4]
    # 0.75 x 4 epochs: cluster after epochs 1, 2 and 3, never after the last.
    assert [r.cluster_s > 0 for r in result.epochs] == [True, True, True, False]
    steps_per_epoch = math.ceil(len(tiny.train) / 256)
    assert [r.step for r in result.epochs] == [steps_per_epoch * e for e in (1, 2, 3, 4)]
    for r in result.epochs:
        assert 0 <= r.val_auc <= 1 and r.val_bce > 0 and r.train_bce > 0
        assert r.samples_per_s > 0 and r.train_s > 0
    assert result.params == 8 * 32 and result.peak_mem_bytes is None


def test_full_table_learns_the_tiny_set(tiny):
    result = train(RunConfig(TINY_DATASET, "full", 0, epochs=10, batch_size=128, lr=1e-2), tiny)
    assert result.params == 60 * 32
    assert result.epochs[-1].train_bce < result.epochs[0].train_bce
    assert max(r.val_auc for r in result.epochs) > 0.6


def test_same_seed_same_curve(tiny):
    run = RunConfig(TINY_DATASET, "cce", budget=8 * 32, epochs=2, batch_size=256)
    a, b = train(run, tiny, "cpu"), train(run, tiny, "cpu")
    assert [r.val_bce for r in a.epochs] == [r.val_bce for r in b.epochs]


def test_cluster_all_resets_optimizer_state_of_the_clustered_tables():
    from cce_bench import make_embedding

    emb = make_embedding(50, 128, 4, "cce", 2, seed=0)
    opt = torch.optim.AdamW(emb.parameters())
    emb(torch.arange(50)).sum().backward()
    opt.step()
    assert emb.table0 in opt.state
    cluster_all(torch.nn.Sequential(emb), opt)
    for table in (emb.table0, emb.table1):  # fresh state, reset in place: zero moments, step 0
        assert all(float(v.abs().sum()) == 0 for v in opt.state[table].values())


def test_early_stop_needs_both_metrics_worse():
    assert _should_stop(0.01, bce=0.52, auc=0.70, best_bce=0.50, best_auc=0.80)
    assert not _should_stop(0.01, bce=0.52, auc=0.80, best_bce=0.50, best_auc=0.80)
    assert not _should_stop(0.01, bce=0.501, auc=0.70, best_bce=0.50, best_auc=0.80)
    assert not _should_stop(0.0, bce=9.0, auc=0.0, best_bce=0.50, best_auc=0.80)


def test_clustering_schedule():
    run = RunConfig("d", "cce", 64, epochs=10)
    assert [e for e in range(1, 11) if run.clusters_after(e)] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "epochs must be at least 1"),
    ("lr", -1.0, "lr must be a positive number, not -1.0"),
    ("lr", float("inf"), "lr must be a positive number, not inf"),
    ("weight_decay", float("nan"), "weight_decay must be a number >= 0, not nan"),
    ("cluster_until", 2.0, "cluster_until must be in"),
    ("model", "mlp", "unknown model 'mlp'"),
])
def test_bad_run_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig("d", "cce", 64, **{field: value})


def test_still_improving_is_the_last_epoch_beating_the_earlier_ones_by_the_tolerance():
    from cce_bench.engine import improved_in_last_epoch

    rising = [(1, 0.60, 0.70), (2, 0.55, 0.74), (3, 0.52, 0.77)]
    assert improved_in_last_epoch(rising, 0.01)
    plateau = [(1, 0.60, 0.70), (2, 0.55, 0.74), (3, 0.549, 0.7405)]  # better, by < 1%
    assert not improved_in_last_epoch(plateau, 0.01)
    assert improved_in_last_epoch(plateau, 0.001)
    worse = [(1, 0.60, 0.70), (2, 0.55, 0.74), (3, 0.56, 0.73)]
    assert not improved_in_last_epoch(worse, 0.01)
    # Either metric: AUC still rising by 2% while BCE has flattened.
    assert improved_in_last_epoch([(1, 0.55, 0.70), (2, 0.55, 0.714)], 0.01)
    # Several points per epoch: the last epoch's best against every earlier epoch's best.
    steps = [(1, 0.60, 0.7), (1, 0.50, 0.7), (2, 0.499, 0.7), (2, 0.51, 0.7)]
    assert not improved_in_last_epoch(steps, 0.01)
    assert improved_in_last_epoch([(1, 0.60, 0.7), (1, 0.50, 0.7), (2, 0.40, 0.7),
                                   (2, 0.45, 0.7)], 0.01)
    # One epoch: its last point against the ones before; one point: nothing to compare.
    assert improved_in_last_epoch([(1, 0.60, 0.7), (1, 0.50, 0.7)], 0.01)
    assert not improved_in_last_epoch([(1, 0.50, 0.7)], 0.01)


def test_a_run_still_rising_at_its_last_epoch_is_marked_one_stopped_early_is_not(tiny):
    rising = train(RunConfig(TINY_DATASET, "full", 0, epochs=3, lr=3e-3, batch_size=128),
                   tiny, "cpu")
    assert rising.status == "ok" and len(rising.epochs) == 3 and rising.still_improving
    # lr 0.3 overshoots: both metrics worse after the first epoch, so it stops early.
    stopped = train(RunConfig(TINY_DATASET, "full", 0, epochs=20, lr=0.3, batch_size=128),
                    tiny, "cpu")
    assert len(stopped.epochs) < 20 and not stopped.still_improving
    # Early stopping off and a peak before the last epoch: not still improving either.
    peaked = train(RunConfig(TINY_DATASET, "full", 0, epochs=6, lr=1e-2, batch_size=128,
                             early_stop=0), tiny, "cpu")
    assert len(peaked.epochs) == 6 and not peaked.still_improving


def test_the_engine_says_before_each_clustering():
    from cce_bench.datasets import load_dataset
    from cce_bench.engine import train
    from tests.conftest import TINY_DATASET

    data = load_dataset(TINY_DATASET)
    told = []
    run = RunConfig(TINY_DATASET, "cce", 16 * 32, epochs=3, early_stop=0)
    result = train(run, data, "cpu", on_cluster=lambda *args: told.append(args))
    steps = result.epochs[0].step
    assert told == [(run, 1, steps), (run, 2, 2 * steps)]  # cluster_until 0.75 of 3 epochs
    assert [r.cluster_s > 0 for r in result.epochs] == [True, True, False]
    told.clear()
    train(RunConfig(TINY_DATASET, "hash", 16 * 32, epochs=2), data, "cpu",
          on_cluster=lambda *args: told.append(args))
    assert told == []


def test_interaction_data_refuses_ids_outside_its_tables():
    # Checked once at load: on CUDA the tables are read without a bounds check per id.
    from cce_bench.data import InteractionData, InteractionSplit
    from cce_bench.errors import IdError

    ok = InteractionSplit(torch.tensor([0, 2]), torch.tensor([1, 0]), torch.tensor([1.0, 0.0]))
    bad = InteractionSplit(torch.tensor([0, 3]), torch.tensor([1, 0]), torch.tensor([1.0, 0.0]))
    InteractionData("fine", 3, 2, ok, ok)
    with pytest.raises(IdError, match=r"mine: val users run from 0 to 3, outside \[0, 3\)"):
        InteractionData("mine", 3, 2, ok, bad)


def test_a_gmf_run_at_tf32_holds_the_switch_while_it_trains(tiny):
    # tf32 lets cuBLAS use tensor cores for the tables' products (dhe, tt, ldim); on a CPU
    # the switch changes nothing, so the numbers equal fp32's.
    seen = []
    run = RunConfig(TINY_DATASET, "dhe", 64 * 32, epochs=1, batch_size=500, precision="tf32")
    low = train(run, tiny, "cpu", on_epoch=lambda r, e: seen.append(
        torch.backends.cuda.matmul.allow_tf32))
    assert seen == [True] and not torch.backends.cuda.matmul.allow_tf32
    exact = train(RunConfig(TINY_DATASET, "dhe", 64 * 32, epochs=1, batch_size=500), tiny, "cpu")
    assert low.epochs[0].val_bce == exact.epochs[0].val_bce
