"""Loading results: sources by name or path, duplicates, runs without a result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from cce_bench.plots import best_per_run, count_failed, failed_summary, load_results
from cce_bench.plots.summary import resolve_sources
from cce_bench.results import ResultsLog, now_timestamp


def test_names_resolve_to_the_results_folder_and_paths_stay(tmp_path):
    (tmp_path / "real.csv").write_text("")
    assert resolve_sources(None, Path("res")) == [Path("res/default.csv")]
    assert resolve_sources(["paper", str(tmp_path / "real.csv"), "x.csv"], Path("res")) == [
        Path("res/paper.csv"), tmp_path / "real.csv", Path("x.csv")]


def test_a_run_in_two_files_counts_once(results_csv, tmp_path):
    shutil.copy(results_csv, tmp_path / "copy.csv")
    once = load_results([str(results_csv)])
    twice = load_results([str(results_csv), str(tmp_path / "copy.csv")])
    assert len(twice) == len(once)
    pd.testing.assert_frame_equal(best_per_run(twice), best_per_run(once))


def test_a_failed_run_that_later_succeeded_is_not_counted(tmp_path):
    log = ResultsLog(tmp_path / "r.csv")
    base = {"run_id": "r1", "dataset": "d", "model": "gmf", "method": "hash", "budget_asked": 64,
            "dim": 8, "n_chunks": 4, "seed": 0, "started_at": now_timestamp()}
    log.append([{**base, "epoch": 0, "step": 0, "status": "failed", "error": "killed"}])
    log.append([{**base, "run_id": "r2", "epoch": 0, "step": 0, "status": "oom"}])
    assert count_failed(load_results([str(tmp_path / "r.csv")])) == 2
    log.append([{**base, "epoch": 1, "step": 5, "status": "ok", "val_bce": 0.5, "val_auc": 0.7,
                 "params": 64, "total_bytes": 512, "train_s": 1.0, "cluster_s": 0.0,
                 "samples_per_s": 10.0}])
    rows = load_results([str(tmp_path / "r.csv")])
    assert count_failed(rows) == 1
    assert failed_summary(rows) == "1 run without a result (1 oom)"


def test_post_training_methods_are_scored_after_compression_only():
    from cce_bench.config import RunConfig
    from cce_bench.plots.summary import best_per_run
    from cce_bench.results import COLUMNS, now_timestamp

    run = RunConfig("syn-60-2400", "pq", 256, epochs=3)
    base = {c: None for c in COLUMNS} | {
        "run_id": run.run_id, "sweep": "t", "dataset": run.dataset, "model": "gmf",
        "method": "pq", "budget_asked": 256, "params": 256, "total_bytes": 1024, "dim": 32,
        "n_chunks": 4, "seed": 0, "status": "ok", "started_at": now_timestamp(),
        "train_s": 1.0, "samples_per_s": 1.0}
    # The full table scores 0.9 at epoch 2 and compresses then; the codebooks reach 0.7.
    rows = pd.DataFrame([
        base | {"epoch": 1, "step": 10, "val_auc": 0.8, "val_bce": 0.4, "cluster_s": 0.1},
        base | {"epoch": 2, "step": 20, "val_auc": 0.9, "val_bce": 0.3, "cluster_s": 0.1},
        base | {"epoch": 3, "step": 30, "val_auc": 0.7, "val_bce": 0.5, "cluster_s": 0.0}])
    best = best_per_run(rows)
    assert best["val_auc"].tolist() == [0.7] and best["val_bce"].tolist() == [0.5]


def test_test_scores_come_from_the_best_validation_point():
    from cce_bench.config import RunConfig
    from cce_bench.plots.summary import best_per_run
    from cce_bench.results import COLUMNS, now_timestamp

    run = RunConfig("criteo-synthetic-100", "cce", 1600, model="dlrm", dim=16,
                    bottom_mlp="13-16", top_mlp="16-1")
    base = {c: None for c in COLUMNS} | {
        "run_id": run.run_id, "sweep": "t", "dataset": run.dataset, "model": "dlrm",
        "method": "cce", "budget_asked": 1600, "params": 1600, "total_bytes": 9000, "dim": 16,
        "n_chunks": 4, "seed": 0, "status": "ok", "started_at": now_timestamp(),
        "train_s": 1.0, "samples_per_s": 1.0, "cluster_s": 0.0, "epoch": 1}
    # Evaluation points every 50 steps: validation is best at step 100; the test BCE is best
    # at step 150, which must not be reported.
    rows = pd.DataFrame([
        base | {"step": 50, "val_bce": 0.47, "val_auc": 0.70, "test_bce": 0.471, "test_auc": 0.7},
        base | {"step": 100, "val_bce": 0.45, "val_auc": 0.72, "test_bce": 0.452, "test_auc": 0.71},
        base | {"step": 150, "val_bce": 0.46, "val_auc": 0.71, "test_bce": 0.440, "test_auc": 0.73}])
    best = best_per_run(rows).iloc[0]
    assert (best["val_bce"], best["test_bce"], best["best_step"]) == (0.45, 0.452, 100)


def test_still_improving_comes_from_the_csv_or_is_judged_from_older_rows(results_csv):
    from .conftest import GMF_DATASET, still_rising

    rows = load_results([str(results_csv)])
    assert rows["still_improving"].isna().all()  # the fixture is written without the column
    assert not best_per_run(rows)["still_improving"].any()  # its runs peak before the last epoch
    cce = ((rows["dataset"] == GMF_DATASET) & (rows["method"] == "cce") & (rows["seed"] == 0)
           & (rows["status"] == "ok"))
    rising = still_rising(rows, cce)
    best = best_per_run(rising).set_index("run_id")["still_improving"]
    assert set(best[best].index) == set(rows.loc[cce, "run_id"])
    # A diverged run is never still improving, whatever its rows before diverging did.
    diverged = rows.groupby("run_id")["status"].last() == "diverged"
    assert not best_per_run(still_rising(rows, rows["run_id"].isin(diverged[diverged].index)))[
        "still_improving"].any()
    # The CSV's own verdict (the run's last row) wins over the rows: it knows the run's
    # tolerance and whether it stopped early.
    said = rising.copy()
    last = said.groupby("run_id").tail(1).index
    said.loc[last, "still_improving"] = 0.0
    assert not best_per_run(said)["still_improving"].any()
