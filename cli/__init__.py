"""The command-line interface: one file per command, joined into one Typer app here."""

from __future__ import annotations

from typing import Annotated

import typer

from .bench import bench
from .common import state
from .datasets import datasets
from .download import download
from .methods import methods
from .plot import plot
from .report import report
from .sweep import sweep

app = typer.Typer(
    name="cce-bench", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="Benchmark compressed embedding tables: train, sweep, plot and report.")


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks for errors.")] = False) -> None:
    state["debug"] = debug


for command in (sweep, plot, report, methods, datasets, download, bench):
    app.command()(command)


def main() -> None:
    app()


__all__ = ["app", "main"]
