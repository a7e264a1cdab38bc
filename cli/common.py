"""What every command shares: consoles and the one place where errors become one line."""

from __future__ import annotations

import functools
import traceback
import warnings
from typing import Callable

import typer
from rich.console import Console

from cce_bench.errors import CceBenchError

console = Console()
err_console = Console(stderr=True)
state = {"debug": False}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings (a skipped results line, ...) as one yellow line, not Python's format."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


warnings.showwarning = _show_warning


def friendly_errors(command: Callable) -> Callable:
    """Turn a CceBenchError into one red line and exit 1; anything else into one line too,
    with the traceback only under --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CceBenchError as err:
            if state["debug"]:
                traceback.print_exc()
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]; finished runs are saved, "
                              "start the same command again to resume")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - last resort: never a bare traceback
            if state["debug"]:
                traceback.print_exc()
            err_console.print(f"[red]internal error:[/red] {type(err).__name__}: {err} "
                              "(run with --debug for the traceback)", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
