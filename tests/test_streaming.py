"""Streamed training batches: the same rows in the same order as resident ones, so the same
run, whether the order shuffles rows or blocks of rows; and the choice between the two."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cce_bench import order, streaming
from cce_bench.config import RunConfig
from cce_bench.datasets import load_criteo
from cce_bench.engine import device_splits, train
from cce_bench.errors import ConfigError
from cce_bench.order import EpochOrder
from cce_bench.steps import StaticEpoch
from cce_bench.streaming import HostSplit, StreamingEpoch
from tests.conftest import TINY_DATASET, requires_cuda

TINY_CRITEO = "criteo-synthetic-3000-cap200"


@pytest.fixture(scope="module")
def tiny_criteo():
    return load_criteo(TINY_CRITEO)


def run(method: str = "cce", **fields) -> RunConfig:
    settings = dict(model="dlrm", dim=8, n_chunks=4, epochs=2, batch_size=32, lr=0.1,
                    weight_decay=0.0, optimizer="sgd", bottom_mlp="13-16-8", top_mlp="16-1",
                    early_stop=0, eval_every=25, cluster_every=25, cluster_until=0.3)
    return RunConfig(TINY_CRITEO, method, 8 * 20, **(settings | fields))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 100 rows, so the tiny split (about 2,600 rows) has many, one of them short,
    and windows of 7 x 32 rows start and end inside blocks."""
    monkeypatch.setattr(order, "BLOCK_ROWS", 100)


@pytest.mark.parametrize("shuffle", ["rows", "blocks"])
def test_streamed_windows_hold_the_resident_batches(tiny_criteo, monkeypatch, small_blocks,
                                                    shuffle):
    monkeypatch.setattr(streaming, "DEFAULT_WINDOW", 7)  # many windows, a short last one
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    host = HostSplit.of(tiny_criteo, "train")
    epoch = StreamingEpoch(model, optimizer, host, 32, False, torch.device("cpu"),
                           shuffle=shuffle)
    epoch.prepare(torch.Generator().manual_seed(5))
    order = EpochOrder(len(host), torch.Generator().manual_seed(5), shuffle).all().numpy()
    if shuffle == "rows":  # what every streamed run read before shuffle existed
        np.testing.assert_array_equal(
            order, torch.randperm(len(host), generator=torch.Generator().manual_seed(5)))
    # The resident epoch of the same seed reads the same rows, batch by batch.
    resident = StaticEpoch(model, optimizer, tiny_criteo.tensors("train"), 32, False,
                           shuffle=shuffle)
    resident.prepare(torch.Generator().manual_seed(5))
    seen = []
    for step in range(epoch.steps):
        epoch.feed()
        slot = step % epoch.window
        weight = epoch.weight[slot].bool()
        seen.append(epoch.inputs[1][slot][weight].numpy())
        rows = order[step * 32:(step + 1) * 32]
        np.testing.assert_array_equal(epoch.inputs[0][slot][weight].numpy(), host.features[0][rows])
        np.testing.assert_array_equal(epoch.labels[slot][weight].numpy(), host.labels[rows])
        np.testing.assert_array_equal(resident.inputs[1][step][weight].numpy(),
                                      epoch.inputs[1][slot][weight].numpy())
    epoch.close()
    assert sum(len(s) for s in seen) == len(host)  # every row once, padding masked


@pytest.mark.parametrize("shuffle", ["rows", "blocks"])
def test_a_streamed_run_equals_the_resident_run(tiny_criteo, monkeypatch, small_blocks,
                                                shuffle):
    monkeypatch.setattr(streaming, "DEFAULT_WINDOW", 10)
    resident = train(run(shuffle=shuffle), tiny_criteo, "cpu", stepper="static",
                     input="device")
    streamed = train(run(shuffle=shuffle), tiny_criteo, "cpu", input="stream")
    plain = train(run(shuffle=shuffle), tiny_criteo, "cpu", stepper="plain", input="device")
    assert plain.epochs[-1].val_bce == pytest.approx(resident.epochs[-1].val_bce, abs=1e-5)
    if shuffle == "blocks":  # the run's shuffle reached its steppers: another order
        rows = train(run(), tiny_criteo, "cpu", input="stream")
        assert rows.epochs[-1].val_bce != pytest.approx(streamed.epochs[-1].val_bce, abs=1e-6)
    assert len(resident.epochs) == len(streamed.epochs) > 2
    for a, b in zip(resident.epochs, streamed.epochs):
        assert (a.step, a.epoch) == (b.step, b.epoch)
        assert a.val_bce == pytest.approx(b.val_bce, abs=1e-6)
        assert a.train_bce == pytest.approx(b.train_bce, abs=1e-6)


@requires_cuda
@pytest.mark.parametrize("shuffle", ["rows", "blocks"])
def test_a_streamed_run_equals_the_resident_run_on_cuda(tiny_criteo, monkeypatch, small_blocks,
                                                        shuffle):
    monkeypatch.setattr(streaming, "DEFAULT_WINDOW", 10)
    resident = train(run("hash", shuffle=shuffle), tiny_criteo, "cuda", input="device")
    streamed = train(run("hash", shuffle=shuffle), tiny_criteo, "cuda", input="stream")
    for a, b in zip(resident.epochs, streamed.epochs):
        assert a.val_bce == pytest.approx(b.val_bce, abs=1e-5)


def test_input_choice(tiny_criteo):
    train_split, val, test = device_splits(tiny_criteo, torch.device("cpu"), "stream")
    assert isinstance(train_split, HostSplit) and len(val) == tiny_criteo.split_sizes["val"]
    assert not isinstance(device_splits(tiny_criteo, torch.device("cpu"))[0], HostSplit)
    with pytest.raises(ConfigError, match="unknown input 'disk'; choose from: auto, device, "
                                          "stream"):
        device_splits(tiny_criteo, torch.device("cpu"), "disk")
    from cce_bench.datasets import load_dataset

    with pytest.raises(ConfigError, match="input 'stream' is for Criteo datasets"):
        device_splits(load_dataset(TINY_DATASET), torch.device("cpu"), "stream")
