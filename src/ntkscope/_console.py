"""Console helpers shared by the CLI commands."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text


def fail(message: str) -> NoReturn:
    """Print one line ``error: message`` on stderr and exit with status 2."""
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(2)
