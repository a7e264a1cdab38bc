"""Dry-run estimates: earlier results first, else the device's cost model, which says where
its rate was measured."""

from __future__ import annotations

import pytest

from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from cce_bench.sweeps.estimate import RUN_STEP_US, estimate, estimate_lines, train_rows
from tests.conftest import TINY_DATASET


def test_training_rows_without_loading():
    assert train_rows("syn-1500-1000000") == (1_000_000, True)  # a synthetic set's interactions
    rows, exact = train_rows("ml-1m")  # not downloaded: its ratings, more than it trains on
    assert rows == 1_000_209 and not exact
    tiny = load_dataset(TINY_DATASET)  # built: the cache's own count
    assert train_rows(TINY_DATASET) == (len(tiny.train), True)
    assert train_rows("no-such-set") == (None, False)


def test_the_cost_model_is_steps_times_the_measured_rate(tmp_path):
    runs = [RunConfig("syn-1500-1000000", "cce", 512, seed=s, epochs=3) for s in range(2)]
    guess = estimate(runs, [tmp_path], "cuda")
    steps = 2 * 3 * 245  # ceil(1,000,000 / 4096) steps an epoch
    assert (guess.covered, guess.modelled, guess.run_steps) == (2, 2, steps)
    assert guess.seconds == pytest.approx(steps * RUN_STEP_US["gmf"]["cuda"][0] / 1e6)
    assert not guess.upper_bound
    assert estimate(runs, [tmp_path]).covered == 0  # without a device kind: history only
    dlrm = RunConfig("criteo-synthetic", "cce", 512, model="dlrm", batch_size=128, epochs=2)
    rows, _ = train_rows("criteo-synthetic")
    guess = estimate([dlrm], [tmp_path], "cuda")  # DLRM's own rate, from its grid on an H200
    assert guess.run_steps == 2 * -(-rows // 128)
    assert guess.seconds == pytest.approx(guess.run_steps * RUN_STEP_US["dlrm"]["cuda"][0] / 1e6)
    assert estimate([dlrm], [tmp_path], "cpu").covered == 0  # no CPU rate for DLRM
    # A precision with a rate of its own takes it; one without, the device's.
    tf32 = RunConfig(**{**dlrm.to_dict(), "precision": "tf32"})
    guess = estimate([tf32], [tmp_path], "cuda")
    assert guess.seconds == pytest.approx(guess.run_steps * RUN_STEP_US["dlrm"]["cuda:tf32"][0]
                                          / 1e6)
    bf16 = RunConfig(**{**dlrm.to_dict(), "precision": "bf16"})
    assert estimate([bf16], [tmp_path], "cuda").seconds == pytest.approx(
        guess.run_steps * RUN_STEP_US["dlrm"]["cuda"][0] / 1e6)


def test_one_line_per_sweep_then_the_total_and_the_models_source(tmp_path):
    todo = [("a", RunConfig("syn-1500-1000000", "hash", 512)),
            ("b", RunConfig("ml-1m", "hash", 512)),
            ("c", RunConfig("criteo-synthetic", "hash", 512, model="dlrm", batch_size=128))]
    lines = estimate_lines(todo, [tmp_path], "cpu", 1)
    assert [line.split(":")[0] for line in lines] == [
        "estimated time, a", "estimated time, b", "estimated time, c",
        "estimated time, all (2 of 3 runs)", "cost model (cpu)"]
    assert "unknown" in lines[2]
    assert RUN_STEP_US["gmf"]["cpu"][1] in lines[-1] and "upper bound" in lines[-1]  # ml-1m
