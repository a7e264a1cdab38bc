"""The local backend: worker processes give the rows one process gives; a dead worker's run is a
`failed` row and a new worker carries on; --retry-failed runs it again."""

from __future__ import annotations

import pandas as pd
import pytest

from cce_bench.errors import ConfigError
from cce_bench.results import read_rows
from cce_bench.sweeps import Execution, SweepSpec, run_sweep
from cce_bench.sweeps.local import plan_slots
from cce_bench.sweeps.work import CRASH_AT_START_ENV, CRASH_HOOK_ENV
from tests.conftest import TINY_DATASET

# Columns that must not depend on where a run trained (timings and timestamps may).
SAME = ["run_id", "method", "budget_asked", "params", "seed", "epoch", "step", "train_bce",
        "val_bce", "val_auc", "status"]


def tiny_spec(tmp_path, name: str, **fields) -> SweepSpec:
    return SweepSpec(**({"name": name, "datasets": TINY_DATASET, "methods": ["cce", "hash"],
                         "budgets": [4, 16], "epochs": 2, "batch_size": 512, "device": "cpu",
                         "results": tmp_path} | fields))


def metrics(path) -> pd.DataFrame:
    rows = read_rows(path)[SAME]
    return rows.sort_values(["run_id", "epoch"]).reset_index(drop=True)


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    # Worker processes use fewer torch threads than one process; CPU sums may then round
    # differently in the last bits, so metrics match to a tight tolerance, the rest exactly.
    exact = [c for c in SAME if c not in ("train_bce", "val_bce", "val_auc")]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)


def test_two_cpu_workers_give_the_rows_of_one(tmp_path):
    one = run_sweep(tiny_spec(tmp_path, "one"), execution=Execution(workers=1))
    two = run_sweep(tiny_spec(tmp_path, "two"), execution=Execution(workers=2))
    assert one.statuses == two.statuses == {"ok": 4}
    inline = run_sweep(tiny_spec(tmp_path, "inline"), execution=Execution(workers=0))
    assert inline.statuses == {"ok": 4}
    assert_same_rows(metrics(tmp_path / "one.csv"), metrics(tmp_path / "two.csv"))
    assert_same_rows(metrics(tmp_path / "one.csv"), metrics(tmp_path / "inline.csv"))


def test_a_dead_worker_is_a_failed_row_and_is_replaced(tmp_path, monkeypatch):
    spec = tiny_spec(tmp_path, "crash", methods=["hash"], seeds=3, budgets=[4])
    doomed = spec.expand()[1]
    monkeypatch.setenv(CRASH_HOOK_ENV, doomed.run_id)
    summary = run_sweep(spec, execution=Execution(workers=1))  # the one worker dies mid-sweep
    assert summary.statuses == {"ok": 2, "failed": 1}
    rows = read_rows(spec.results_path)
    failed = rows[rows["status"] == "failed"]
    assert failed["run_id"].tolist() == [doomed.run_id]
    assert failed["error"].iloc[0].startswith("worker ")
    assert "died from SIGKILL" in failed["error"].iloc[0]

    again = run_sweep(spec, execution=Execution(workers=1))  # failed runs count as done...
    assert again.statuses == {} and again.skipped == 3
    monkeypatch.delenv(CRASH_HOOK_ENV)
    retried = run_sweep(spec, execution=Execution(workers=1), retry_failed=True)  # ...unless
    assert retried.statuses == {"ok": 1} and retried.skipped == 2
    rows = read_rows(spec.results_path)
    final = rows[rows["run_id"] == doomed.run_id]["status"].tolist()
    assert final == ["failed", "ok", "ok"]  # the old row stays; 2 epochs of the retry follow


def test_a_worker_killed_while_starting_is_a_failed_row_and_is_replaced(tmp_path, monkeypatch):
    spec = tiny_spec(tmp_path, "start", methods=["hash"], seeds=2, budgets=[4])
    monkeypatch.setenv(CRASH_AT_START_ENV, str(tmp_path / "killed-once"))
    summary = run_sweep(spec, execution=Execution(workers=1))  # the first worker dies starting
    assert summary.statuses == {"failed": 1, "ok": 1}
    failed = read_rows(spec.results_path).query("status == 'failed'")
    assert "died from SIGKILL" in failed["error"].iloc[0]
    assert (tmp_path / "killed-once").exists()


def test_the_driver_never_honours_the_crash_hook(tmp_path, monkeypatch):
    spec = tiny_spec(tmp_path, "inline", methods=["hash"], budgets=[4])
    monkeypatch.setenv(CRASH_HOOK_ENV, spec.expand()[0].run_id)
    assert run_sweep(spec, execution=Execution(workers=0)).statuses == {"ok": 1}


def test_worker_slots_per_device():
    assert [s.name for s in plan_slots("cpu", 3, 1)] == ["cpu0", "cpu1", "cpu2"]
    assert plan_slots("cpu", None, 4) == []  # no GPU, no --workers: train in the driver
    assert plan_slots("cpu", 0, 1) == []


def test_threads_default_to_one_in_the_driver_and_follow_threads(monkeypatch):
    import torch

    from cce_bench.sweeps.work import set_threads

    saved = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        set_threads(0)
        assert torch.get_num_threads() == 1  # small steps in this process: one thread
        set_threads(0, 2)
        assert torch.get_num_threads() == 2  # --threads wins
    finally:
        torch.set_num_threads(saved)
    import pytest

    from cce_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads must be at least 1, not 0"):
        Execution(threads=0)


def test_a_results_file_keeps_runs_of_one_precision(tmp_path):
    # Reports group by method and budget, not precision: tf32 runs appended to an fp32 file
    # would be averaged with them.
    run_sweep(tiny_spec(tmp_path, "exact", methods=["hash"], budgets=[4]),
              execution=Execution(workers=0))
    with pytest.raises(ConfigError, match=r"exact.csv holds fp32 runs and this sweep trains "
                                          r"tf32; .* own name \(--name\)"):
        run_sweep(tiny_spec(tmp_path, "exact", methods=["hash"], budgets=[4], precision="tf32"),
                  execution=Execution(workers=0))
    summary = run_sweep(tiny_spec(tmp_path, "exact-tf32", methods=["hash"], budgets=[4],
                                  precision="tf32"), execution=Execution(workers=0))
    assert summary.statuses == {"ok": 1}
