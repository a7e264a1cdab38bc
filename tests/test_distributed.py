"""--ddp: one run over two CPU processes (gloo) matches one process at the same global batch."""

from __future__ import annotations

import pytest

from cce_bench.config import RunConfig
from cce_bench.datasets import load_criteo
from cce_bench.distributed import Shard, train_distributed
from cce_bench.engine import train
from cce_bench.errors import ConfigError

TINY_CRITEO = "criteo-synthetic-3000-cap200"


def run(method: str) -> RunConfig:
    return RunConfig(TINY_CRITEO, method, 8 * 20, model="dlrm", dim=8, n_chunks=4, epochs=2,
                     batch_size=64, lr=0.1, weight_decay=0.0, optimizer="sgd",
                     bottom_mlp="13-16-8", top_mlp="16-1", early_stop=0, eval_every=20,
                     cluster_every=20, cluster_until=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cce", "hash"])
def test_two_gloo_processes_match_one(method):
    data = load_criteo(TINY_CRITEO)  # into the cache, where the processes read it
    alone = train(run(method), data, "cpu", stepper="static")
    seen = []
    both = train_distributed(run(method), TINY_CRITEO, 2, "cpu",
                             on_epoch=lambda r, record: seen.append(record.step))
    assert [r.step for r in both.epochs] == [r.step for r in alone.epochs] == seen
    for a, b in zip(alone.epochs, both.epochs):
        assert b.val_bce == pytest.approx(a.val_bce, abs=2e-4)
        assert b.train_bce == pytest.approx(a.train_bce, abs=2e-4)
        assert b.val_auc == pytest.approx(a.val_auc, abs=2e-3)
    assert (both.params, both.table_params) == (alone.params, alone.table_params)


def test_a_batch_must_split_evenly():
    assert Shard(1, 4).bounds(128) == (32, 64)
    with pytest.raises(ConfigError, match="--ddp over 3 processes needs a batch size divisible "
                                          "by 3, not 128"):
        Shard(0, 3).bounds(128)
    with pytest.raises(ConfigError, match="--ddp needs at least 2 processes, not 1"):
        train_distributed(run("hash"), TINY_CRITEO, 1, "cpu")
