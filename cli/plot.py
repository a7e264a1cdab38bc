"""`cce-bench plot`: compression-vs-metric figures from a results CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cce_bench.plots import best_per_run, compression_figure, count_failed
from cce_bench.results import read_rows

from .common import console, friendly_errors


@friendly_errors
def plot(
    csv: Annotated[Optional[Path], typer.Argument(
        help="Results CSV. Default: results/default.csv.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for the figures. Default: figures/ beside the CSV.")] = None,
    fmt: Annotated[Optional[list[str]], typer.Option(
        "--format", help="File format (repeatable): png, pdf, svg. Default: png and pdf.")] = None,
) -> None:
    """Draw best validation BCE and AUC against parameters per table, one line per method."""
    path = csv or Path("results/default.csv")
    formats = fmt or ["png", "pdf"]
    for f in formats:
        if f not in ("png", "pdf", "svg"):
            raise typer.BadParameter(f"unknown format '{f}'; choose png, pdf or svg",
                                     param_hint="--format")
    rows = read_rows(path)
    best = best_per_run(rows)
    out_dir = out or path.parent / "figures"
    written = []
    for dataset in sorted(best["dataset"].unique()):
        for metric in ("bce", "auc"):
            written += compression_figure(best, dataset, metric, out_dir, formats)
    failed = count_failed(rows)
    if failed:
        console.print(f"skipped {failed} runs without a result (failed, oom or too small)")
    for file in written:
        console.print(f"wrote {file}")
