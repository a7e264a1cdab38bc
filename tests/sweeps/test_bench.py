"""`cce-bench bench`'s GMF sweeps: stacked and unstacked groups train the same run-steps."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.datasets import load_dataset
from cce_bench.sweeps.bench import time_paper_sweep
from tests.conftest import TINY_DATASET


def test_the_paper_sweep_counts_the_same_run_steps_stacked_or_not():
    data = load_dataset(TINY_DATASET)
    settings = {"methods": ["hash", "full"], "seeds": 1, "epochs": 2}
    cpu = torch.device("cpu")
    stacked = time_paper_sweep(data, cpu, group_size=64, stack=True, **settings)
    alone = time_paper_sweep(data, cpu, group_size=16, stack=False, **settings)
    assert stacked["trained"] == alone["trained"] == 13  # hash at 12 budgets, full once
    assert stacked["run_steps"] == alone["run_steps"] > 0  # early stopping agrees
    for timing in (stacked, alone):
        assert timing["us_per_run_step"] == 1e6 * timing["seconds"] / timing["run_steps"]
        assert 0 < timing["eval_s"] + timing["cluster_s"] < timing["seconds"]


def test_bench_prints_the_paper_sweep_per_run_step():
    result = CliRunner().invoke(app, ["bench", "--device", "cpu", "--dataset", TINY_DATASET,
                                      "-m", "hash", "-b", "16", "--no-sweep", "--paper-sweep",
                                      "--no-stack"])
    assert result.exit_code == 0, result.output
    assert "not stacked" in result.output and "us per run-step" in result.output
