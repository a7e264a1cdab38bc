"""`cce-bench report`: the best validation AUC and BCE per method and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cce_bench.plots import best_per_run, report_frame, to_markdown
from cce_bench.results import read_rows

from .common import console, friendly_errors


@friendly_errors
def report(
    csv: Annotated[Optional[Path], typer.Argument(
        help="Results CSV. Default: results/default.csv.")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="table (rich, for a terminal), csv or markdown.")] = "table",
) -> None:
    """Print mean best val AUC and BCE over seeds, per dataset, method and budget."""
    if fmt not in ("table", "csv", "markdown"):
        raise typer.BadParameter(f"unknown format '{fmt}'; choose table, csv or markdown",
                                 param_hint="--format")
    frame = report_frame(best_per_run(read_rows(csv or Path("results/default.csv"))))
    if fmt == "csv":
        typer.echo(frame.to_csv(index=False, float_format="%.6g"), nl=False)
    elif fmt == "markdown":
        typer.echo(to_markdown(frame), nl=False)
    else:
        console.print(_rich_table(frame))


def _rich_table(frame) -> Table:
    table = Table(title="best validation scores (mean ± std over seeds)")
    for column in ("dataset", "method", "ppd", "params", "seeds", "val AUC", "val BCE"):
        table.add_column(column, justify="left" if column in ("dataset", "method") else "right")
    for row in frame.itertuples(index=False):
        table.add_row(row.dataset, row.method, f"{row.ppd:g}", f"{int(row.params):,}",
                      str(row.seeds), f"{row.auc_mean:.4f} ± {row.auc_std:.4f}",
                      f"{row.bce_mean:.4f} ± {row.bce_std:.4f}")
    return table
