"""`cce-bench datasets`: the dataset catalog and what is in the local cache."""

from __future__ import annotations

from rich.table import Table

from cce_bench.datasets import catalog, status

from .common import console, friendly_errors


@friendly_errors
def datasets() -> None:
    """List every dataset: name, kind, source, training rows, cache status."""
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("dataset", "kind", "source", "train rows", "status", "description"):
        # One line per entry: long cells are cut with an ellipsis, never wrapped.
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         min_width=None if column != "dataset" else 18)
    for entry in catalog():
        rows = f"{entry.rows:,}" if entry.rows else "?"
        table.add_row(entry.name, entry.kind, entry.source, rows, status(entry.name),
                      entry.description)
    console.print(table)
