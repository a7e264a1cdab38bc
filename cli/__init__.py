"""The command-line interface: one file per command, joined into one Typer app here.

The command modules import only typer, rich and torch-free parts of cce-bench at their top;
each command imports torch, pandas or matplotlib when it runs, so `cce-bench --help`, `methods`
and `datasets` start in a fraction of a second. The app is built inside main(), so a Ctrl-C
while it loads is one line, not a traceback.
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated

import typer

_app: typer.Typer | None = None


def _version(value: bool) -> None:
    if value:
        from cce_bench import __version__
        typer.echo(f"cce-bench {__version__}")
        raise typer.Exit()


def reflow(doc: str | None) -> str | None:
    """A docstring's paragraphs as single lines: the help screen wraps them to the terminal,
    where the docstring's own line breaks would cut phrases in two."""
    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def build_app() -> typer.Typer:
    global _app
    if _app is not None:
        return _app
    from .bench import bench
    from .common import Command, Group, state
    from .datasets import datasets
    from .download import download
    from .methods import methods
    from .plot import plot
    from .report import report
    from .sweep import sweep

    app = typer.Typer(
        name="cce-bench", cls=Group, no_args_is_help=True, add_completion=False,
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
        app.command(cls=Command, help=reflow(command.__doc__))(command)
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
