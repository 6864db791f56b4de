"""One-line user errors of the command line, shared by every command group."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["err_console", "fail"]

err_console = Console(stderr=True)


def fail(message) -> NoReturn:
    """Print ``nicsim: error: MESSAGE`` on standard error and exit with status 2.

    The message is printed as it is: the TOML tables (``[actions.route]``) and paths that
    errors name are not taken for console markup.
    """
    err_console.print(f"[bold red]nicsim: error:[/] {escape(str(message))}", highlight=False,
                      soft_wrap=True)
    raise typer.Exit(2)
