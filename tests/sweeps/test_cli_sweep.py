"""`cce-bench sweep` with spec files: --dry-run, flags over a spec, shipped specs, one-line errors."""

from __future__ import annotations

import re

import pytest

from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.results import read_rows
from tests.conftest import TINY_DATASET

runner = CliRunner()
SPEC = f"""\
# a tiny experiment
datasets = ["{TINY_DATASET}"]
methods = ["cce", "hash"]
budgets = "4:16"
epochs = 2
batch_size = 512
"""


def invoke(*args: str):
    return runner.invoke(app, ["sweep", *args])


def test_dry_run_lists_the_runs_and_trains_nothing(in_tmp):
    (in_tmp / "tiny.toml").write_text(SPEC)
    result = invoke("tiny.toml", "--seeds", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "12 runs, 0 already in results/tiny.csv, 12 to run" in result.output
    assert len(re.findall(r"^[0-9a-f]{16} ", result.output, re.M)) == 12
    assert f"{TINY_DATASET} cce ppd=4 c=4 seed=1" in result.output
    # No earlier results: the device's cost model, which says where its rate comes from.
    assert re.search(r"estimated time, tiny: 0:\d\d:\d\d with 1 run at once \(12 from the cost "
                     r"model, 120 run-steps\)", " ".join(result.output.split())), result.output
    assert re.search(r"cost model \((cpu|cuda)\): [\d,]+ us per run-step, measured for",
                     " ".join(result.output.split()))
    assert not (in_tmp / "results").exists()


def test_a_spec_with_flags_runs_and_then_estimates_the_rest(in_tmp):
    (in_tmp / "tiny.toml").write_text(SPEC)
    result = invoke("tiny.toml", "-m", "hash", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "3 runs trained (3 ok), 0 already done; results in results/tiny.csv" in result.output
    rows = read_rows(in_tmp / "results" / "tiny.csv")
    assert set(rows["method"]) == {"hash"} and set(rows["epoch"]) <= {1, 2}

    more = invoke("tiny.toml", "--seeds", "2", "-m", "hash", "--dry-run")
    assert "6 runs, 3 already in results/tiny.csv, 3 to run" in more.output
    assert re.search(r"estimated time, tiny: 0:00:\d\d with 1 run at once \(3 runs from 3 "
                     r"earlier\)", " ".join(more.output.split())), more.output


def test_a_shipped_spec_by_name(in_tmp):
    result = invoke("paper/n-chunks", "--dry-run")
    assert result.exit_code == 0, result.output
    # ce and cce x 12 budgets x 5 n_chunks x 3 seeds
    assert "360 runs, 0 already in results/n-chunks.csv, 360 to run" in result.output
    assert "... and 340 more" in result.output
    # The whole grid, every budget of the authors' results/ml-1m.
    flat = " ".join(result.output.split())
    assert ("n-chunks: ml-1m x 2 methods x budgets 4, 8, 16, 32, 64, 128, 256, 512, 1,024, "
            "2,048, 4,096, 8,192 ppd x n_chunks 1, 2, 4, 8, 16 x seeds 0, 1, 2") in flat


def test_spec_errors_are_one_line(in_tmp):
    (in_tmp / "bad.toml").write_text(SPEC + "epoch = 3\n")
    result = invoke("bad.toml")
    assert result.exit_code == 1
    assert "error: bad.toml: unknown field 'epoch'; did you mean 'epochs'?" in result.output
    assert "Traceback" not in result.output
    result = invoke("tiny.toml")
    assert result.exit_code == 1 and "no spec file 'tiny.toml'" in result.output
    (in_tmp / "tiny.toml").write_text(SPEC)
    result = invoke("tiny.toml", "-b", "3:9")
    assert result.exit_code == 1 and "field 'budgets': bad range '3:9'" in result.output
    result = invoke("tiny.toml", "--address", "auto")
    assert result.exit_code == 1 and "--address is for --backend ray" in result.output


def test_a_sweep_not_in_a_terminal_prints_a_line_per_finished_run(in_tmp):
    result = invoke("-d", TINY_DATASET, "-m", "hash", "-b", "16,64", "--epochs", "1")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "] run " in line]
    assert len(lines) == 2
    assert "run 1/2 ok: syn-60-2400 hash ppd=16 c=4 seed=0; ETA" in lines[0]
    assert "run 2/2 ok: syn-60-2400 hash ppd=64" in lines[1]
    assert "sweep: 2 runs, 0 already done, 2 to run on main" in result.output


def test_a_missing_dataset_stops_before_anything_is_written(in_tmp):
    dry = invoke("-d", "ml-100k", "--dry-run")
    assert dry.exit_code == 0
    assert "dataset ml-100k is not in the data cache: run `cce-bench download ml-100k` first" \
        in " ".join(dry.output.split())
    result = invoke("-d", "ml-100k")
    assert result.exit_code == 1 and "run `cce-bench download ml-100k` first" in result.output
    assert not (in_tmp / "results").exists()


def test_a_stacked_sweep_writes_the_rows_of_an_unstacked_one(in_tmp):
    (in_tmp / "tiny.toml").write_text(SPEC)
    for name, flag in (("stacked", "--stack"), ("alone", "--no-stack")):
        result = invoke("tiny.toml", "--name", name, "--seeds", "2", "--group-size", "8",
                        "--workers", "0", flag)
        assert result.exit_code == 0, result.output
    stacked, alone = (read_rows(in_tmp / "results" / f"{n}.csv").sort_values(["run_id", "epoch"])
                      for n in ("stacked", "alone"))
    assert stacked["run_id"].tolist() == alone["run_id"].tolist()
    assert stacked["val_bce"].tolist() == pytest.approx(alone["val_bce"].tolist(), rel=1e-5)


def test_a_log_says_when_a_long_run_starts_clustering(in_tmp, monkeypatch):
    from cce_bench.sweeps.progress import RichObserver

    monkeypatch.setattr(RichObserver, "LONG_RUN_S", -1)  # every run counts as long
    from cce_bench.datasets import load_dataset

    steps = -(-len(load_dataset(TINY_DATASET).train) // 4096)
    result = invoke("-d", TINY_DATASET, "-m", "cce", "-b", "16", "--epochs", "3")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "clustering (k-means)" in line]
    # cluster_until 0.75 of 3 epochs: after epochs 1 and 2, never after the last.
    assert [line.split("] ", 1)[1] for line in lines] == [
        f"syn-60-2400 cce ppd=16 c=4 seed=0: clustering (k-means) in epoch {e}/3, step {s}"
        for e, s in ((1, steps), (2, 2 * steps))]
