"""`cce-bench methods`: the registered embedding methods, one line each."""

from __future__ import annotations

from rich.table import Table

from cce_bench.embeddings import methods as registered

from .common import console, friendly_errors


@friendly_errors
def methods() -> None:
    """List every embedding method: name, family, what it computes, paper."""
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("method", "family", "what it computes", "paper"):
        # One line per entry: long cells are cut with an ellipsis, never wrapped.
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         min_width=None if column != "method" else 8)
    for info in registered():
        table.add_row(info.name, info.family, info.description, info.paper)
    console.print(table)
