"""How long runs will take, judged from earlier results in the same results folder.

A run's time is its seconds per epoch (train + cluster + eval) times its epochs, taken from the
closest earlier runs: same dataset, method, budget, n_chunks and dim; else same dataset, method
and dim; else same dataset. Runs whose dataset was never trained have no estimate. Early
stopping makes real runs shorter, so the estimate leans high.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cce_bench.config import RunConfig
from cce_bench.errors import ResultsError
from cce_bench.results import read_rows

_LEVELS = (["dataset", "method", "budget_asked", "n_chunks", "dim"],
           ["dataset", "method", "dim"],
           ["dataset"])


@dataclass
class Estimate:
    seconds: float  # one run after another; divide by the runs trained at once
    covered: int  # runs that have an estimate
    history: int  # earlier runs it is based on


def estimate(runs: list[RunConfig], results_dirs: list[Path]) -> Estimate:
    """Serial seconds for the runs, from the results files in the given folders."""
    history = _history(results_dirs)
    if history.empty or not runs:
        return Estimate(0.0, 0, 0)
    tables = [history.groupby(keys)["s_per_epoch"].mean().to_dict() for keys in _LEVELS]
    seconds, covered = 0.0, 0
    for run in runs:
        values = {"dataset": run.dataset, "method": run.method, "budget_asked": run.budget,
                  "n_chunks": run.n_chunks, "dim": run.dim}
        for keys, table in zip(_LEVELS, tables):
            key = tuple(values[k] for k in keys)
            found = table.get(key[0] if len(key) == 1 else key)
            if found is not None:
                seconds += found * run.epochs
                covered += 1
                break
    return Estimate(seconds, covered, len(history))


def _history(results_dirs: list[Path]) -> pd.DataFrame:
    """One row per earlier run that trained: its keys and seconds per epoch."""
    frames = []
    paths = sorted({p.resolve() for folder in results_dirs for p in Path(folder).glob("*.csv")})
    for path in paths:
        try:
            frames.append(read_rows(path))
        except ResultsError:
            continue  # not a results file
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["status"].isin(["ok", "diverged"]) & rows["train_s"].notna()]
    rows = rows.assign(seconds=rows[["train_s", "cluster_s", "eval_s"]].fillna(0).sum(axis=1))
    keys = ["run_id", "dataset", "method", "budget_asked", "n_chunks", "dim"]
    per_run = rows.groupby(keys, as_index=False).agg(seconds=("seconds", "sum"),
                                                     epochs=("epoch", "nunique"))
    return per_run.assign(s_per_epoch=per_run["seconds"] / per_run["epochs"])
