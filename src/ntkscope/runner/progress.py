"""A rich progress bar for sweeps: done, failed and remaining runs, elapsed time and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SweepProgress:
    """Counts runs as they finish; draws a bar on a terminal (a context manager).

    Args:
        title: what is running (the study's name).
        total: runs to execute now (finished runs skipped from an earlier sweep excluded).
        console: where to draw; default stderr. Nothing is drawn when it is not a terminal.
    """

    def __init__(self, title: str, total: int, console: Console | None = None) -> None:
        self.done = self.failed = 0
        self.total = total
        console = console or Console(stderr=True)
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "done {task.fields[done]}, failed {task.fields[failed]}, "
                "remaining {task.fields[remaining]}"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self._task = self._bar.add_task(title, total=total, done=0, failed=0, remaining=total)

    def __enter__(self) -> SweepProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def resize(self, total: int) -> None:
        """Count ``total`` runs (or tiles) from now on."""
        self.total = total
        remaining = total - self.done - self.failed
        self._bar.update(self._task, total=total, remaining=remaining)

    def advance(self, ok: bool) -> None:
        """One run finished (``ok``) or failed."""
        self.done += ok
        self.failed += not ok
        remaining = self.total - self.done - self.failed
        self._bar.update(
            self._task, advance=1, done=self.done, failed=self.failed, remaining=remaining
        )
