"""The ``--plan`` of ``sweep`` and ``reproduce``: estimated time and memory before running."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ntkscope.runner.plan import Plan, wall_time

BASIS = (
    "Estimates, not measurements: each study's cost model counts the FLOPs of its main "
    "operations (eNTKs, training steps, infinite kernels) and the calls and steps that "
    "carry a fixed cost, scaled by a factor measured on its runs on a 2-core machine with "
    "one torch thread per run (ntkscope.studies._cost.CALIBRATION). One run's estimate may "
    "be off by a factor of a few; a preset's total by less. A faster machine takes less."
)


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps the number readable: s, min, h, days, years."""
    if not math.isfinite(seconds):
        return "?"
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _gigabytes(memory: float) -> str:
    return f"{memory / 1e9:.2g} GB" if math.isfinite(memory) else "?"


def print_plan(plans: Sequence[Plan], worker_memory: float, workers: int) -> None:
    """Per study and in total: configs, estimated time (all runs, and the longest), peak memory
    of a run, configs over ``worker_memory``; the wall time on ``workers`` workers."""
    table = Table(title="plan (estimates)")
    table.add_column("study", no_wrap=True)
    for header in ("configs", "time, 1 core", "longest run", "memory per run",
                   f"over {_gigabytes(worker_memory)}"):  # fmt: skip
        table.add_column(header, justify="right")
    for p in plans:
        over = len(p.over(worker_memory))
        table.add_row(p.study, str(len(p.costs)), duration(p.seconds), duration(p.longest),
                      _gigabytes(p.memory), str(over) if over else "")  # fmt: skip
    total_over = sum(len(p.over(worker_memory)) for p in plans)
    table.add_row(
        "total", str(sum(len(p.costs) for p in plans)), duration(sum(p.seconds for p in plans)),
        duration(max((p.longest for p in plans), default=0.0)),
        _gigabytes(max((p.memory for p in plans), default=0.0)), str(total_over or ""),
        end_section=True,
    )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(
        f"wall time on {workers} worker{'s' * (workers > 1)}: about "
        f"{duration(wall_time(plans, workers))}"
    )
    console.print(BASIS)
