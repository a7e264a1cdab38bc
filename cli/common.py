"""What every command shares: consoles, the one place where errors become one line, the help
screens' one style, and options with a fixed set of values."""

from __future__ import annotations

import functools
import re
import traceback
import warnings
from typing import Callable, Iterable, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from cce_bench.errors import CceBenchError

try:  # typer 0.2x carries its own copy of click; earlier versions use click itself
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - typer < 0.2x
    from click.exceptions import UsageError

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


def choice(values: Iterable[str]) -> dict:
    """typer.Option keywords for an option with a fixed set of values: the help shows them as
    <a|b|c>, and any other value is one line naming it and the choices. A value "cuda:N" stands
    for cuda:0, cuda:1, ...

    A parser rather than an Enum: typer reports a bad Enum value with pydantic's "Value error,"
    prefix, and an Enum cannot hold cuda:N."""
    values = list(values)
    patterns = [re.compile(re.escape(v[:-2]) + r":\d+" if v.endswith(":N") else re.escape(v))
                for v in values]

    def parse(value: str) -> str:
        if not any(p.fullmatch(value) for p in patterns):
            raise typer.BadParameter(f"'{value}' is not one of {', '.join(values)}")
        return value

    return {"parser": parse, "metavar": f"<{'|'.join(values)}>"}


class _OneStyle:
    """Help screens and usage errors in one style for every command.

    - Defaults are said in the help text ("Default: ..."), which can say what a bare value
      cannot ("0.001 (GMF), 0.1 (DLRM)"), so typer's own "[default: ...]" is off.
    - A flag shows no "<bool>" metavar (typer 0.2x shows one for every flag, --help too).
    - A usage error (a bad value, an unknown option) is one red line naming the command's
      --help, as every other error is, instead of typer's usage line and boxed message.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            _plain(param)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            _plain(option)
        return option

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as err:
            _usage_error(err)


def _plain(param) -> None:
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    if hasattr(param, "show_default"):
        param.show_default = False


def _usage_error(err: UsageError) -> NoReturn:
    if type(err).__name__ == "NoArgsIsHelpError":  # `cce-bench` alone: the help, as typer does
        raise err
    ctx = getattr(err, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    message = err.format_message().rstrip(".")
    err_console.print(f"[red]error:[/red] {message}{hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(err.exit_code) from None


class Command(_OneStyle, TyperCommand):
    """A cce-bench command (see _OneStyle)."""


class Group(_OneStyle, TyperGroup):
    """The cce-bench app (see _OneStyle); an unknown command is one line too."""

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except UsageError as err:
            _usage_error(err)
