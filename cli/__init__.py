"""The command-line interface: one file per command, joined into one Typer app here.

The commands (and what they import: torch, pandas, matplotlib) load when the app is first
asked for, inside main(), so a Ctrl-C while they load is one line, not a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

_app: typer.Typer | None = None


def _version(value: bool) -> None:
    if value:
        from cce_bench import __version__
        typer.echo(f"cce-bench {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    global _app
    if _app is not None:
        return _app
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
            "--debug", help="Show tracebacks for errors.")] = False,
            version: Annotated[bool, typer.Option(
                "--version", callback=_version, is_eager=True,
                help="Print the version and exit.")] = False) -> None:
        state["debug"] = debug

    for command in (sweep, plot, report, methods, datasets, download, bench):
        app.command()(command)
    _app = app
    return app


def __getattr__(name: str):
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    try:
        app = build_app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    app()


__all__ = ["app", "build_app", "main"]
