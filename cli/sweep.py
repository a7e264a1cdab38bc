"""`cce-bench sweep`: train every run of a grid that is not in the results file yet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cce_bench.datasets import DEFAULT_DATASET
from cce_bench.errors import ConfigError
from cce_bench.sweeps import DEFAULT_BUDGETS, SweepSpec, run_sweep
from cce_bench.sweeps.progress import RichObserver

from .common import console, friendly_errors


class BudgetTooSmallForAll(ConfigError):
    """Every run of the sweep had a budget below its method's minimum."""


@friendly_errors
def sweep(
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", "-m", help="Embedding method (repeat for several; 'all' for every one).")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", "-d", help=f"Dataset name (repeatable). Default: {DEFAULT_DATASET}.")] = None,
    budget: Annotated[Optional[list[int]], typer.Option(
        "--budget", "-b", help="Parameters per dimension, ppd (repeatable); "
        f"params per table = ppd x dim. Default: {' '.join(map(str, DEFAULT_BUDGETS))}.")] = None,
    n_chunks: Annotated[Optional[list[int]], typer.Option(
        "--n-chunks", help="Chunks per embedding (repeatable). Default: 4.")] = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds, 0..N-1.", min=1)] = 1,
    epochs: Annotated[int, typer.Option(help="Training epochs.", min=1)] = 10,
    dim: Annotated[int, typer.Option(help="Embedding dimension.", min=1)] = 32,
    batch_size: Annotated[int, typer.Option(help="Training batch size.", min=1)] = 4096,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    cluster_until: Annotated[float, typer.Option(
        help="Cluster after each epoch up to this fraction of the epochs.")] = 0.75,
    early_stop: Annotated[float, typer.Option(
        help="Stop when val BCE and AUC both worsen by this fraction (0: never).")] = 0.01,
    kmeans: Annotated[str, typer.Option(help="k-means backend: auto, faiss or torch.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    name: Annotated[str, typer.Option(help="Sweep name: rows go to OUT/NAME.csv.")] = "default",
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("results"),
) -> None:
    """Train GMF with each method over a grid of budgets and seeds; append rows to OUT/NAME.csv.

    Runs already in the results file are skipped, so an interrupted sweep resumes.
    """
    spec = SweepSpec(
        name=name, datasets=dataset or [DEFAULT_DATASET], methods=method or ["cce"],
        budgets=budget or list(DEFAULT_BUDGETS), n_chunks=n_chunks or [4],
        seeds=list(range(seeds)), dim=dim, epochs=epochs, batch_size=batch_size, lr=lr,
        cluster_until=cluster_until, early_stop=early_stop, kmeans=kmeans, device=device, out=out)
    with RichObserver(console) as observer:
        summary = run_sweep(spec, observer)
    ran = sum(summary.statuses.values())
    if ran and summary.statuses.get("too_small") == ran:
        # Nothing trained: say why, as an error, instead of a table of too_small rows.
        raise BudgetTooSmallForAll(summary.first_errors["too_small"])
    for status in ("too_small", "failed", "oom"):
        if status in summary.first_errors:
            console.print(f"[yellow]{summary.statuses[status]} runs {status}[/yellow], "
                          f"first: {summary.first_errors[status]}", highlight=False)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    console.print(f"{ran} runs trained ({statuses}), {summary.skipped} already done; "
                  f"results in {summary.path}")
