"""From result rows to one best score per run, and to means over seeds."""

from __future__ import annotations

import pandas as pd

from cce_bench.errors import ResultsError

RUN_KEYS = ["dataset", "model", "method", "budget_asked", "dim", "n_chunks", "seed"]
GROUP_KEYS = ["dataset", "model", "method", "budget_asked", "dim", "n_chunks"]


def best_per_run(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its best validation AUC and BCE over epochs (as the paper reports)."""
    if rows.empty:
        raise ResultsError("the results file holds no rows yet; run `cce-bench sweep` first")
    ok = rows[rows["status"].isin(["ok", "diverged"]) & rows["val_bce"].notna()]
    if ok.empty:
        raise ResultsError("the results file holds no successful runs to summarise")
    best = ok.groupby(["run_id", *RUN_KEYS], as_index=False).agg(
        val_auc=("val_auc", "max"), val_bce=("val_bce", "min"), params=("params", "max"),
        total_bytes=("total_bytes", "max"), epochs=("epoch", "max"),
        train_s=("train_s", "sum"), samples_per_s=("samples_per_s", "mean"))
    best["ppd"] = best["budget_asked"] / best["dim"]
    return best


def mean_over_seeds(best: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, method and budget: mean, std, min and max over seeds."""
    grouped = best.groupby(GROUP_KEYS, as_index=False)
    out = grouped.agg(
        seeds=("seed", "nunique"), params=("params", "max"), total_bytes=("total_bytes", "max"),
        ppd=("ppd", "first"), epochs=("epochs", "max"),
        auc_mean=("val_auc", "mean"), auc_std=("val_auc", "std"),
        auc_min=("val_auc", "min"), auc_max=("val_auc", "max"),
        bce_mean=("val_bce", "mean"), bce_std=("val_bce", "std"),
        bce_min=("val_bce", "min"), bce_max=("val_bce", "max"))
    return out.fillna({"auc_std": 0.0, "bce_std": 0.0})


def count_failed(rows: pd.DataFrame) -> int:
    """Runs whose last row is not a result (failed, oom, too_small)."""
    failed = rows[rows["status"].isin(["failed", "oom", "too_small"])]
    return failed["run_id"].nunique()
