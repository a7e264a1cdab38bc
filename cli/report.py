"""`cce-bench report`: best validation AUC and BCE per method and budget, compression at parity."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from .common import choice, console, err_console, friendly_errors

if TYPE_CHECKING:
    from cce_bench.plots import Report

# plots.report.DEFAULT_TOLERANCE, said here so the help does not import pandas (a test checks).
DEFAULT_TOLERANCE = 0.001


class Against(str, Enum):
    paper = "paper"


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"


@friendly_errors
def report(
    sources: Annotated[Optional[list[str]], typer.Argument(
        metavar="[SOURCE]...", help="Results CSVs or sweep names (a name means "
        "RESULTS/<name>.csv). Default: default.")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="table (for a terminal), markdown, csv (one tidy row per cell) or "
        "latex (booktabs). Default: table.", **choice(f.value for f in Format))] = "table",
    tolerance: Annotated[float, typer.Option(
        min=0.0, help="Compression at parity: how close (in val BCE) to the full table "
        f"counts as parity. Default: {DEFAULT_TOLERANCE:g}.")] = DEFAULT_TOLERANCE,
    results: Annotated[Path, typer.Option(
        help="Results folder, where sweep names are looked up. Default: results.")]
        = Path("results"),
    against: Annotated[Optional[str], typer.Option(
        help="Instead: compare with the authors' own results (paper: their repository's "
        "results/, shipped with cce-bench): per dataset, method and budget our mean ± std, "
        "theirs, the difference and whether ours is within their seed spread (DLRM on "
        "Criteo: the values of their figures), a section per sweep.",
        **choice(a.value for a in Against))] = None,
) -> None:
    """Tabulate the best val BCE and AUC per method and budget, and compression at parity.

    Per dataset: methods x budgets with the best val BCE and AUC (mean ± std over seeds), the
    best method per budget marked, and each method's compression at parity with the full
    table, in parameters and in bytes; or, with --against paper, the comparison with the
    authors' results.
    """
    from cce_bench.plots import (best_per_run, build_report, failed_summary, load_results,
                                 to_csv, to_latex, to_markdown)

    fmt = Format(fmt)
    rows = load_results(sources, results)
    skipped = failed_summary(rows)
    if skipped:  # stderr, so redirected markdown / csv / latex stays clean
        err_console.print(f"skipped {skipped}", highlight=False)
    if against is not None:
        print_comparison(best_per_run(rows), fmt)
        return
    built = build_report(best_per_run(rows), tolerance)
    if fmt is Format.csv:
        typer.echo(to_csv(built), nl=False)
    elif fmt is Format.markdown:
        typer.echo(to_markdown(built), nl=False)
    elif fmt is Format.latex:
        typer.echo(to_latex(built), nl=False)
    else:
        for table in rich_tables(built):
            console.print(table)


def print_comparison(best, fmt: Format) -> None:
    from cce_bench.plots import paper_tables
    from cce_bench.plots.paper import build_comparison

    comparison = build_comparison(best)
    if fmt is Format.csv:
        typer.echo(paper_tables.to_csv(comparison), nl=False)
    elif fmt is Format.markdown:
        typer.echo(paper_tables.to_markdown(comparison), nl=False)
    elif fmt is Format.latex:
        typer.echo(paper_tables.to_latex(comparison), nl=False)
    else:
        for section in comparison.sections:
            if not section.ran:
                console.print(section.not_run_line(), highlight=False)
                continue
            for metric in section.metrics:
                console.print(comparison_table(section, metric))
            console.print("\n".join(paper_tables.notes(section)), highlight=False)
            console.print("[bold]verdict per method[/bold]", highlight=False)
            for line in section.method_lines():
                console.print(f"  {line}", highlight=False)
            if section.also_ran:
                console.print(section.also_ran_line(), highlight=False)
            console.print()


def comparison_table(section, metric: str) -> Table:
    from cce_bench.plots.paper_tables import GROUP_TITLES, header, metric_rows
    from cce_bench.plots.report import METRIC_NAMES

    table = Table(title=f"{section.title}: best {METRIC_NAMES[metric]}", title_justify="left")
    for column in header(section):
        table.add_column(column, justify="left" if column in ("method", "verdict") else "right")
    for group, cells in metric_rows(section, metric):
        if GROUP_TITLES[group]:
            table.add_section()
            table.add_row(f"[italic]{GROUP_TITLES[group]}[/italic]")
        for row in cells:
            table.add_row(*row)
    return table


def _width(title: str) -> int:
    """A table at least as wide as its title (up to 100 columns): a narrow table (one budget)
    would otherwise wrap its title and notes into a column a word wide."""
    return min(len(title) + 4, 100)


def rich_tables(built: Report) -> list[Table]:
    from cce_bench.plots.report import (METRIC_NAMES, PARITY_HEADER, parity_rows, row_cells,
                                        seeds_note)

    tables = []
    for section in built.sections:
        groups = [(False, section.reference_line())]
        if not section.post.empty:
            groups.append((True, section.post_line()))
        for post, caption in groups:
            for metric in section.metrics:
                labels, budgets, values = section.grid(metric, post)
                if not labels:
                    continue
                what = "post-training reference, " if post else ""
                title = f"{section.title}: {what}best {METRIC_NAMES[metric]}"
                table = Table(title=title, title_justify="left", caption_justify="left",
                              min_width=_width(title),
                              caption=f"{caption}\n{seeds_note(section)}"
                              + ("" if post else "; bold *: best at that budget")
                              + (f"\n{section.improving_note()}" if section.any_improving
                                 else ""))
                table.add_column("method")
                for b in budgets:
                    table.add_column(section.budget_label(b), justify="right")
                for label in labels:
                    table.add_row(label, *row_cells(values, label, budgets,
                                                    lambda text: f"[bold]{text} *[/bold]"))
                tables.append(table)
        title = (f"{section.title}: compression at parity (within {built.tolerance:g} BCE of "
                 "the full table), in parameters and in bytes")
        parity = Table(title=title, min_width=_width(title), caption_justify="left",
                       caption="bytes: parameters × 4 plus index buffers (per-id codes, hash "
                       "seeds) of every table", title_justify="left")
        for column in PARITY_HEADER:
            parity.add_column(column, justify="left" if column == "method" else "right")
        for row in parity_rows(section):
            parity.add_row(*row)
        tables.append(parity)
    return tables
