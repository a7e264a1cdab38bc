"""`cce-bench plot`: the paper's figures, training curves and cost from results CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import choice, console, friendly_errors

# The values plots/ draws (its KINDS, METRICS, X_AXES, FORMATS, REFERENCES, CURVE_X), named here
# so the help does not import pandas and matplotlib; tests/cli checks that they agree.
KINDS = ["compression", "chunks", "criteo", "curves", "cost", "all"]
METRICS = ["bce", "auc", "both"]
X_AXES = ["params", "bytes", "ppd"]
FORMATS = ["png", "pdf", "svg"]
REFERENCES = ["paper"]
CURVE_X = ["epoch", "step"]


@friendly_errors
def plot(
    sources: Annotated[Optional[list[str]], typer.Argument(
        metavar="[SOURCE]...", help="Results CSVs or sweep names (a name means "
        "RESULTS/<name>.csv). Default: default.")] = None,
    kind: Annotated[Optional[list[str]], typer.Option(
        "--kind", "-k", help="Figure (repeatable): compression (metric vs size, the paper's "
        "figure), chunks (one line per n_chunks), criteo (DLRM datasets side by side), curves "
        "(metric per epoch of chosen runs), cost (seconds and samples/s), all. "
        "Default: compression.", **choice(KINDS))] = None,
    metric: Annotated[str, typer.Option(
        help="Validation metric to draw. Default: both.", **choice(METRICS))] = "both",
    x: Annotated[str, typer.Option(
        "--x", help="Size axis (log2): params per table, total bytes (params + index "
        "buffers), or params per dimension. Default: params.", **choice(X_AXES))] = "params",
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for the figures. Default: figures/ beside the first CSV.")] = None,
    fmt: Annotated[Optional[list[str]], typer.Option(
        "--format", help="File format (repeatable). Default: png and pdf.",
        **choice(FORMATS))] = None,
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", "-m", help="Only these methods (repeatable); the full table stays as the "
        "reference.")] = None,
    budget: Annotated[Optional[list[float]], typer.Option(
        "--budget", "-b", help="curves: budgets in params per dimension (repeatable). "
        "Default: the middle budget.")] = None,
    seed: Annotated[Optional[list[int]], typer.Option(
        help="curves: seeds (repeatable). Default: the lowest.")] = None,
    run: Annotated[Optional[list[str]], typer.Option(
        help="curves: run ids or their prefixes (repeatable); overrides the other choices.")]
        = None,
    curve_x: Annotated[str, typer.Option(
        help="curves: x axis. Default: epoch.", **choice(CURVE_X))] = "epoch",
    results: Annotated[Path, typer.Option(
        help="Results folder, where sweep names are looked up. Default: results.")]
        = Path("results"),
    reference: Annotated[Optional[str], typer.Option(
        help="compression, criteo: also draw the authors' mean curves (paper: their "
        "repository's results/, shipped with cce-bench), dashed in each method's colour, on "
        "the datasets they ran (GMF, Criteo Kaggle).", **choice(REFERENCES))] = None,
) -> None:
    """Draw the paper's figures, training curves and cost from results CSVs.

    Per dataset: best validation BCE / AUC against table size, one line and marker per method
    (mean over seeds, min..max band), the full table and the Bayes-optimal score as reference
    lines; or the n_chunks, Criteo, training-curve and cost figures.
    """
    from cce_bench.plots import CurveSelection, PlotRequest, draw, load_results, resolve_sources

    paths = resolve_sources(sources, results)
    rows = load_results(sources, results)
    request = PlotRequest(
        kinds=kind or ["compression"],
        metrics=["bce", "auc"] if metric == "both" else [metric],
        x=x, out_dir=out or paths[0].parent / "figures", formats=fmt or ["png", "pdf"],
        curves=CurveSelection(methods=method, budgets=budget, seeds=seed, run_ids=run,
                              x=curve_x),
        methods=method, reference=reference)
    outcome = draw(rows, request, bayes_scores(rows["dataset"].unique()))
    for note in outcome.notes:
        console.print(note, highlight=False)
    for file in outcome.written:
        console.print(f"wrote {file}", highlight=False)


def bayes_scores(datasets) -> dict[str, dict[str, float]]:
    """The Bayes-optimal validation scores of the cached synthetic datasets among `datasets`."""
    from cce_bench.datasets.meta import cached_meta

    scores = {}
    for name in datasets:
        meta = cached_meta(name) or {}
        if "bayes_val_bce" in meta or "bayes_val_auc" in meta:
            scores[name] = {"bce": meta.get("bayes_val_bce"), "auc": meta.get("bayes_val_auc")}
    return scores
