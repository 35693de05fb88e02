"""Console helpers shared by the CLI commands: one-line errors and a progress bar."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.text import Text


def fail(message: str, status: int = 2) -> NoReturn:
    """Print one line ``error: message`` on stderr and exit with ``status`` (2: bad input)."""
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(status)


def progress_bar(console: Console) -> Progress:
    """A transient rich progress bar, shown only on a terminal."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
