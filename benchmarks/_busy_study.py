"""A study for the runner benchmark: ``spin`` seconds of single-threaded CPU work, or none."""

from __future__ import annotations

import time

from matplotlib.figure import Figure

from ntkscope.studies import Progress, Result, Results, StudyConfig


class Config(StudyConfig):
    """One benchmark run."""

    index: int = 0
    """Distinguishes runs (each config is its own run)."""
    spin: float = 0.0
    """Seconds of pure-Python arithmetic (0: a trivial run, all runner overhead)."""


PRESETS = {"quick": {}, "full": {}}


def run(config: Config, progress: Progress) -> Result:
    """Busy-loop for ``spin`` seconds of process CPU time."""
    total, end = 0, time.process_time() + config.spin
    while time.process_time() < end:
        total += sum(range(1000))
    return Result(metrics={"total": total})


def figures(results: Results) -> dict[str, Figure]:
    """None."""
    return {}
