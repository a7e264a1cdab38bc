"""`cce-bench plot`: the paper's figures, training curves and cost from results CSVs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cce_bench.datasets.meta import cached_meta
from cce_bench.plots import CurveSelection, PlotRequest, draw, load_results, resolve_sources

from .common import console, friendly_errors


class Kind(str, Enum):
    compression = "compression"
    chunks = "chunks"
    criteo = "criteo"
    curves = "curves"
    cost = "cost"
    all = "all"


class Metric(str, Enum):
    bce = "bce"
    auc = "auc"
    both = "both"


class XAxis(str, Enum):
    params = "params"
    bytes = "bytes"
    ppd = "ppd"


class Format(str, Enum):
    png = "png"
    pdf = "pdf"
    svg = "svg"


class Reference(str, Enum):
    paper = "paper"


class CurveX(str, Enum):
    epoch = "epoch"
    step = "step"


@friendly_errors
def plot(
    sources: Annotated[Optional[list[str]], typer.Argument(
        help="Results CSVs or sweep names (a name means RESULTS/<name>.csv). "
        "Default: default.", show_default=False)] = None,
    kind: Annotated[Optional[list[Kind]], typer.Option(
        "--kind", "-k", help="Figure (repeatable): compression (metric vs size, the paper's "
        "figure), chunks (one line per n_chunks), criteo (DLRM datasets side by side), curves "
        "(metric per epoch of chosen runs), cost (seconds and samples/s), all. "
        "Default: compression.", show_default=False)] = None,
    metric: Annotated[Metric, typer.Option(help="Validation metric to draw.")] = Metric.both,
    x: Annotated[XAxis, typer.Option(
        "--x", help="Size axis (log2): params per table, total bytes (params + index "
        "buffers), or params per dimension.")] = XAxis.params,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for the figures. Default: figures/ beside the first CSV.",
        show_default=False)] = None,
    fmt: Annotated[Optional[list[Format]], typer.Option(
        "--format", help="File format (repeatable). Default: png and pdf.",
        show_default=False)] = None,
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", "-m", help="Only these methods (repeatable); the full table stays as the "
        "reference.", show_default=False)] = None,
    budget: Annotated[Optional[list[float]], typer.Option(
        "--budget", "-b", help="curves: budgets in params per dimension (repeatable). "
        "Default: the middle budget.", show_default=False)] = None,
    seed: Annotated[Optional[list[int]], typer.Option(
        help="curves: seeds (repeatable). Default: the lowest.", show_default=False)] = None,
    run: Annotated[Optional[list[str]], typer.Option(
        help="curves: run ids or their prefixes (repeatable); overrides the other choices.",
        show_default=False)] = None,
    curve_x: Annotated[CurveX, typer.Option(help="curves: x axis.")] = CurveX.epoch,
    results: Annotated[Path, typer.Option(
        help="Folder where sweep names are looked up.")] = Path("results"),
    reference: Annotated[Optional[Reference], typer.Option(
        help="compression, criteo: also draw the authors' mean curves (paper: their "
        "repository's results/, shipped with cce-bench), dashed in each method's colour, on "
        "the datasets they ran (GMF, Criteo Kaggle).", show_default=False)] = None,
) -> None:
    """Draw figures per dataset: best validation BCE / AUC against table size, one line and
    marker per method (mean over seeds, min..max band), the full table and the Bayes-optimal
    score as reference lines; or the n_chunks, Criteo, training-curve and cost figures."""
    paths = resolve_sources(sources, results)
    rows = load_results(sources, results)
    request = PlotRequest(
        kinds=[k.value for k in kind or [Kind.compression]],
        metrics=["bce", "auc"] if metric is Metric.both else [metric.value],
        x=x.value, out_dir=out or paths[0].parent / "figures",
        formats=[f.value for f in fmt or [Format.png, Format.pdf]],
        curves=CurveSelection(methods=method, budgets=budget, seeds=seed, run_ids=run,
                              x=curve_x.value),
        methods=method, reference=reference.value if reference else None)
    outcome = draw(rows, request, bayes_scores(rows["dataset"].unique()))
    for note in outcome.notes:
        console.print(note, highlight=False)
    for file in outcome.written:
        console.print(f"wrote {file}", highlight=False)


def bayes_scores(datasets) -> dict[str, dict[str, float]]:
    """The Bayes-optimal validation scores of the cached synthetic datasets among `datasets`."""
    scores = {}
    for name in datasets:
        meta = cached_meta(name) or {}
        if "bayes_val_bce" in meta or "bayes_val_auc" in meta:
            scores[name] = {"bce": meta.get("bayes_val_bce"), "auc": meta.get("bayes_val_auc")}
    return scores
