"""How long runs will take: from earlier results in the same results folder, else from a cost
model of the device.

From history: a run's time is its seconds per epoch (train + cluster + eval) times its epochs,
taken from the closest earlier runs: same dataset, method, budget, n_chunks and dim; else same
dataset, method and dim; else same dataset.

From the cost model (GMF runs no earlier result covers): the run's steps, steps per epoch x
epochs, times the microseconds one run-step (one optimizer step of one run, its share of
evaluation and clustering included) took on average over a whole measured sweep on a device of
that kind (RUN_STEP_US says which sweep; a precision with a measured rate of its own, e.g.
DLRM at tf32, takes that one). Steps per epoch come from the dataset's training rows:
the cache's count once it is built, the interactions of a synthetic set, or a download's source
rows (MovieLens: its ratings, more than the rows it trains on) until then.

Early stopping makes real runs shorter, so both lean high.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cce_bench.config import RunConfig
from cce_bench.errors import CceBenchError, ResultsError
from cce_bench.results import read_rows

# Microseconds per run-step averaged over a whole sweep, evaluation and clustering included,
# per model and device kind, with where it was measured. GMF: batch 4096, dim 32; DLRM:
# Kaggle's model at batch 128 (no CPU figure: a Kaggle epoch on a CPU is not a use case).
RUN_STEP_US = {
    "gmf": {
        "cuda": (49.8, ("GMF: the paper's ML-1m-sized sweep on an H200, stacked in groups of 64 "
                        "(the default): 36.4 s for 730,857 run-steps, clustering included "
                        "(BENCHMARKS.md); large budgets cost more a step (dhe and tt at "
                        "65,536+ ppd 5-20x, a CCE clustering round up to minutes): "
                        "`cce-bench bench --reproduce --spec SPEC` times a spec's own groups")),
        "cpu": (7800.0, ("GMF: cce's default sweep (3 budgets x 10 epochs on "
                         "syn-1500-1000000, 7,350 run-steps) on a 2-core CPU: 57 s (README)")),
    },
    "dlrm": {
        "cuda": (117.0, ("DLRM: the paper's Kaggle grid as `cce-bench bench --model dlrm` "
                         "estimates it on an H200, 4.6 GPU-hours for 141M run-steps in lockstep "
                         "groups, evaluation and clustering included (BENCHMARKS.md)")),
        # A rate of its own for runs at --precision tf32 ("kind:precision").
        "cuda:tf32": (73.9, ("DLRM at TF32: the paper's Kaggle grid estimated by the bench's "
                             "grid_estimate from each method's largest measured group on an "
                             "H200, 2.9 GPU-hours for 141M run-steps (BENCHMARKS.md, "
                             "session 7)")),
    },
}

_LEVELS = (["dataset", "method", "budget_asked", "n_chunks", "dim"],
           ["dataset", "method", "dim"],
           ["dataset"])


@dataclass
class Estimate:
    seconds: float  # one run after another; divide by the runs trained at once
    covered: int  # runs that have an estimate
    history: int  # earlier runs it is based on
    modelled: int = 0  # of the covered runs, those estimated by the cost model
    modelled_seconds: float = 0.0  # their seconds (one device; part of seconds)
    run_steps: int = 0  # their run-steps
    model: str = ""  # the cost model's rate and where it was measured
    upper_bound: bool = False  # some steps came from a source's rows, not the training rows


def estimate(runs: list[RunConfig], results_dirs: list[Path],
             device_kind: str | None = None) -> Estimate:
    """Serial seconds for the runs, from the results files in the given folders; with
    device_kind ("cuda" or "cpu"), runs no result covers from the cost model."""
    history = _history(results_dirs)
    tables = ([history.groupby(keys)["s_per_epoch"].mean().to_dict() for keys in _LEVELS]
              if not history.empty else [])
    out = Estimate(0.0, 0, len(history))
    for run in runs:
        if not _from_history(run, tables, out):
            _from_model(run, device_kind, out)
    return out


def _from_history(run: RunConfig, tables: list[dict], out: Estimate) -> bool:
    values = {"dataset": run.dataset, "method": run.method, "budget_asked": run.budget,
              "n_chunks": run.n_chunks, "dim": run.dim}
    for keys, table in zip(_LEVELS, tables):
        key = tuple(values[k] for k in keys)
        found = table.get(key[0] if len(key) == 1 else key)
        if found is not None:
            out.seconds += found * run.epochs
            out.covered += 1
            return True
    return False


def _from_model(run: RunConfig, device_kind: str | None, out: Estimate) -> None:
    rates = RUN_STEP_US.get(run.model, {})
    kind = f"{device_kind}:{run.precision}"
    if kind not in rates:
        kind = device_kind
    if kind not in rates:
        return
    rows, exact = train_rows(run.dataset)
    if rows is None:
        return
    us, where = rates[kind]
    steps = -(-rows // run.batch_size) * run.epochs
    out.seconds += steps * us / 1e6
    out.modelled_seconds += steps * us / 1e6
    out.covered += 1
    out.modelled += 1
    out.run_steps += steps
    rate = f"{us:,.0f} us per run-step, measured for {where}"
    if rate not in out.model:
        out.model = f"{out.model}; {rate}" if out.model else rate
    out.upper_bound = out.upper_bound or not exact


def train_rows(dataset: str) -> tuple[int | None, bool]:
    """(training rows of a dataset, whether exact) without loading it: the cache's count once
    built, a synthetic set's interactions, else the source's rows (an upper bound)."""
    from cce_bench.datasets import info, status
    from cce_bench.datasets.cache import read_meta
    from cce_bench.datasets.fetch import entry_path

    try:
        if status(dataset) == "ready":
            return int(read_meta(entry_path(dataset))["splits"]["train"]), True
        about = info(dataset)
    except (CceBenchError, KeyError, TypeError, ValueError):
        return None, False
    return about.rows, about.kind == "synthetic"


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


def device_kind(device: str) -> str:
    """"cuda" or "cpu": the kind of device a sweep's runs train on."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def _devices(device: str) -> int:
    """Devices the runs spread over (the cost model's rate is one device's)."""
    if device_kind(device) != "cuda" or ":" in device:
        return 1
    from .local import visible_gpus

    return max(1, len(visible_gpus()))


def estimate_lines(todo: list[tuple[str, RunConfig]], results_dirs: list[Path], device: str,
                   parallel: int | None) -> list[str]:
    """The dry run's estimate: a line per sweep (todo: (sweep name, run) pairs), the total when
    there are several, and where the cost model's rate comes from when it was used.
    parallel: runs trained at once (None: a Ray cluster decides)."""
    from .progress import format_seconds

    kind, devices = device_kind(device), _devices(device)
    names = list(dict.fromkeys(name for name, _ in todo))
    parts = [(name, [run for n, run in todo if n == name]) for name in names]
    if len(parts) > 1:
        parts.append(("all", [run for _, run in todo]))
    lines, model, upper = [], "", False
    for name, runs in parts:
        guess = estimate(runs, results_dirs, kind)
        if not guess.covered:
            lines.append(f"estimated time, {name}: unknown (no earlier results of these runs in "
                         f"{', '.join(map(str, results_dirs))}, no cost model for them)")
            continue
        history = guess.seconds - guess.modelled_seconds
        if parallel is None:
            wall, how = guess.seconds, "run after run (divide by the runs Ray trains at once)"
        else:
            wall = history / parallel + guess.modelled_seconds / devices
            how = f"with {parallel} run{'s' if parallel > 1 else ''} at once"
        part = "" if guess.covered == len(runs) else f" ({guess.covered} of {len(runs)} runs)"
        sources = []
        if guess.covered > guess.modelled:
            sources.append(f"{guess.covered - guess.modelled} runs from {guess.history} earlier")
        if guess.modelled:
            sources.append(f"{guess.modelled} from the cost model, {guess.run_steps:,} run-steps")
            model, upper = guess.model, upper or guess.upper_bound
        lines.append(f"estimated time, {name}{part}: {format_seconds(wall)} {how} "
                     f"({'; '.join(sources)})")
    if model:
        lines.append(f"cost model ({kind}): {model}; every epoch counted (early stopping "
                     "shortens runs)" + ("; a dataset not built yet counted from its source "
                                         "rows, an upper bound" if upper else ""))
    return lines
