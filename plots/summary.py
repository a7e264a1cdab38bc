"""From result rows to one best score per run, and to means over seeds.

Everything that draws or tabulates starts here: `load_results` reads one or more CSVs (or sweep
names), `best_per_run` keeps the best validation score of each run over its evaluation points,
as the paper reports, with the test score at that same point (never the best test score), and
`mean_over_seeds` gives mean, std, min and max over seeds per method and budget. A run is
`still_improving` when it ran every epoch it was given (not stopped early, not diverged) and its
last epoch still improved its best val BCE or AUC by more than the early-stop tolerance
(engine.improved_in_last_epoch): the CSV says so on a run's last row; rows written before that
column existed are judged from their own rows by the same rule (status ok, the default tolerance,
as their own is not recorded; an early stop is implied, since a run stops only at a point worse
than its best in both metrics). `mean_over_seeds` counts such seeds per cell (`improving`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cce_bench.engine import IMPROVING_TOLERANCE, improved_in_last_epoch
from cce_bench.errors import ResultsError
from cce_bench.results import read_rows

# A sweep is part of a configuration: two sweeps of one dataset that differ in a setting (lr,
# epochs, ...) are never averaged as if they were seeds of one configuration.
RUN_KEYS = ["sweep", "dataset", "model", "method", "budget_asked", "dim", "n_chunks", "seed"]
GROUP_KEYS = ["sweep", "dataset", "model", "method", "budget_asked", "dim", "n_chunks"]
# A figure or table compares runs of one dataset, model and embedding dimension.
PANEL_KEYS = ["dataset", "model", "dim"]
RESULT_STATUSES = ("ok", "diverged")  # a diverged run keeps its epochs before it diverged
FAILED_STATUSES = ("failed", "oom", "too_small")
DEFAULT_RESULTS = Path("results")


def resolve_sources(sources: list[str] | None, results_dir: Path = DEFAULT_RESULTS) -> list[Path]:
    """CSV paths from paths or sweep names: a name (no .csv, no such file) is results/<name>.csv."""
    paths = []
    for source in sources or ["default"]:
        path = Path(source)
        if path.suffix != ".csv" and not path.is_file():
            path = results_dir / f"{source}.csv"
        paths.append(path)
    return paths


def load_results(sources: list[str] | None, results_dir: Path = DEFAULT_RESULTS) -> pd.DataFrame:
    """Every row of the given CSVs or sweeps, one copy of each (run, epoch)."""
    frames = []
    for path in resolve_sources(sources, results_dir):
        rows = read_rows(path)
        if rows.empty:
            raise ResultsError(f"{path} holds no rows yet; run `cce-bench sweep` first")
        frames.append(rows)
    rows = pd.concat(frames, ignore_index=True)
    # The same run in two files (a copied CSV) counts once.
    return rows.drop_duplicates(["run_id", "epoch", "step", "status"], keep="last")


def result_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows that carry a validation score."""
    return rows[rows["status"].isin(RESULT_STATUSES) & rows["val_bce"].notna()]


def compressed_epochs(rows: pd.DataFrame) -> pd.DataFrame:
    """Drop the epochs a post-training method (pq) trained at full size.

    Such a method compresses on its last cluster() call, so only the epochs after the last one
    with clustering time describe the compressed table; scoring the full table it was would
    credit it with the uncompressed model's result.
    """
    mask = is_post_training(rows)
    if not mask.any():
        return rows
    clustered = rows[mask & (rows["cluster_s"] > 0)].groupby("run_id")["step"].max()
    last = rows["run_id"].map(clustered).fillna(0)
    return rows[~mask | (rows["step"] > last)]


def best_per_run(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its best validation AUC and BCE over epochs (as the paper reports),
    its size, and its cost (seconds summed over epochs, mean samples per second)."""
    if rows.empty:
        raise ResultsError("the results file holds no rows yet; run `cce-bench sweep` first")
    ok = compressed_epochs(result_rows(rows))
    if ok.empty:
        per_run = rows.drop_duplicates("run_id", keep="last")["status"].value_counts()
        counts = ", ".join(f"{n} {status}" for status, n in per_run.items())
        raise ResultsError(f"the results hold no run with a validation score to summarise "
                           f"({counts}); see the status and error columns of the CSV")
    best = ok.groupby(["run_id", *RUN_KEYS], as_index=False).agg(
        val_auc=("val_auc", "max"), val_bce=("val_bce", "min"), params=("params", "max"),
        total_bytes=("total_bytes", "max"), epochs=("epoch", "max"), steps=("step", "max"))
    # The test scores of the point with the best validation BCE (selection on validation only).
    at_best = ok.loc[ok.groupby("run_id")["val_bce"].idxmin(),
                     ["run_id", "test_bce", "test_auc", "step"]]
    best = best.merge(at_best.rename(columns={"step": "best_step"}), on="run_id", how="left")
    # Cost counts every epoch trained, the one that diverged included: its time was spent.
    ran = rows[rows["status"].isin(RESULT_STATUSES)]
    cost = ran.groupby("run_id", as_index=False).agg(
        train_s=("train_s", "sum"), cluster_s=("cluster_s", "sum"),
        samples_per_s=("samples_per_s", "mean"))
    best = best.merge(cost, on="run_id", how="left")
    best["ppd"] = best["budget_asked"] / best["dim"]
    best["fit_s"] = best["train_s"] + best["cluster_s"].fillna(0.0)
    best["still_improving"] = (best["run_id"].map(still_improving(rows, ok))
                               .astype("boolean").fillna(False).astype(bool))
    return best


def still_improving(rows: pd.DataFrame, scored: pd.DataFrame) -> pd.Series:
    """Per run id: whether the run was still improving at its last epoch. The CSV's own
    verdict on the run's last row where it has one; else judged from its scored rows (`scored`:
    result rows, a post-training method's after compression only) by the engine's rule."""
    last = rows.groupby("run_id").tail(1).set_index("run_id")
    recorded = last["still_improving"].dropna().astype(bool)
    judged = {}
    for run_id, group in scored[~scored["run_id"].isin(recorded.index)].groupby("run_id"):
        points = list(group.sort_values("step")[["epoch", "val_bce", "val_auc"]]
                      .itertuples(index=False, name=None))
        judged[run_id] = (last.loc[run_id, "status"] == "ok"
                          and improved_in_last_epoch(points, IMPROVING_TOLERANCE))
    return pd.concat([recorded, pd.Series(judged, dtype=bool)])


def mean_over_seeds(best: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, method and budget: mean, std, min and max over seeds."""
    grouped = best.groupby(GROUP_KEYS, as_index=False)
    out = grouped.agg(
        seeds=("seed", "nunique"), params=("params", "max"), total_bytes=("total_bytes", "max"),
        ppd=("ppd", "first"), epochs=("epochs", "max"),
        auc_mean=("val_auc", "mean"), auc_std=("val_auc", "std"),
        auc_min=("val_auc", "min"), auc_max=("val_auc", "max"),
        bce_mean=("val_bce", "mean"), bce_std=("val_bce", "std"),
        bce_min=("val_bce", "min"), bce_max=("val_bce", "max"),
        test_mean=("test_bce", "mean"), test_std=("test_bce", "std"),
        improving=("still_improving", "sum"),
        fit_s_mean=("fit_s", "mean"), fit_s_min=("fit_s", "min"), fit_s_max=("fit_s", "max"),
        samples_per_s_mean=("samples_per_s", "mean"), samples_per_s_min=("samples_per_s", "min"),
        samples_per_s_max=("samples_per_s", "max"))
    # One seed has no spread: std 0, not NaN, so tables print a number.
    return out.fillna({"auc_std": 0.0, "bce_std": 0.0, "test_std": 0.0})


def failed_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per run without a result (failed, oom, too_small); a run that failed once and
    succeeded when run again has its result, so it is not counted."""
    succeeded = set(result_rows(rows)["run_id"])
    failed = rows[rows["status"].isin(FAILED_STATUSES) & ~rows["run_id"].isin(succeeded)]
    return failed.drop_duplicates("run_id", keep="last")


def count_failed(rows: pd.DataFrame) -> int:
    return len(failed_runs(rows))


def failed_summary(rows: pd.DataFrame) -> str:
    """'3 runs without a result (2 too_small, 1 failed)', or '' when there are none."""
    failed = failed_runs(rows)
    if failed.empty:
        return ""
    counts = failed["status"].value_counts()
    detail = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(failed)} run{'s' if len(failed) > 1 else ''} without a result ({detail})"


def is_reference(frame: pd.DataFrame) -> pd.Series:
    """Rows of the uncompressed table: the sweep gives it budget 0 (it ignores the budget)."""
    from cce_bench.embeddings import methods

    uncompressed = [m.name for m in methods() if m.family == "uncompressed"]
    return (frame["budget_asked"] == 0) | frame["method"].isin(uncompressed)


def is_post_training(frame: pd.DataFrame) -> pd.Series:
    """Rows of a post-training method (pq): it trains the full table, then compresses it, so
    it is a reference for what compression of a trained table reaches, not a competitor."""
    from cce_bench.embeddings import methods

    post = [m.name for m in methods() if getattr(m.cls, "post_training", False)]
    return frame["method"].isin(post)


def main_n_chunks(frame: pd.DataFrame) -> int | None:
    """The n_chunks value most compressed runs use (ties: the smaller): figures show one."""
    compressed = frame[~is_reference(frame)]
    if compressed.empty:
        return None
    counts = compressed["n_chunks"].value_counts()
    return int(min(counts[counts == counts.max()].index))


def panels(frame: pd.DataFrame) -> list[tuple[tuple[str, str, int], str, pd.DataFrame]]:
    """(dataset, model, dim), a file stem and the rows, for every panel of a frame.

    The stem is the dataset name, with model and dim appended only when one dataset was run
    with several, so the common case keeps short names. Rows of several sweeps make one panel
    per sweep (its name in the stem): their settings may differ, so they are never pooled."""
    out = []
    by_sweep = frame["sweep"].nunique() > 1
    for key, group in frame.groupby(PANEL_KEYS + (["sweep"] if by_sweep else []), sort=True):
        dataset, model, dim = key[:3]
        several = frame[frame["dataset"] == dataset][["model", "dim"]].drop_duplicates()
        stem = dataset if len(several) == 1 else f"{dataset}_{model}-d{int(dim)}"
        out.append(((dataset, model, int(dim)), f"{stem}_{key[3]}" if by_sweep else stem, group))
    return out


def report_groups(summary: pd.DataFrame) -> list[str]:
    """The keys a report's sections split on: per sweep too where there are several."""
    return PANEL_KEYS + (["sweep"] if summary["sweep"].nunique() > 1 else [])
