"""A test-only study: instant, raising or sleeping on demand (importable by workers).

Referred to by its module name ``_toy_study`` (the ``toy`` fixture puts this folder on the
path of this process and of spawned workers).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ntkscope.studies import Cost, Progress, Result, Results, StudyConfig


class Config(StudyConfig):
    """One toy run."""

    value: int = 0
    """Any integer; the metric ``square`` is its square."""
    fail: bool = False
    """Raise instead of returning."""
    sleep: float = 0.0
    """Seconds to sleep first."""


PRESETS = {"quick": {"product": {"value": [1, 2]}}, "full": {"product": {"value": [1, 2, 3]}}}


def cost(config: Config) -> Cost:
    """A plan to test plans: ``value`` seconds and ``value`` MB (the run uses neither)."""
    return Cost(float(config.value), config.value * 1e6)


def run(config: Config, progress: Progress) -> Result:
    """Square the value; ``draw`` comes from torch's global generator (seeded per task)."""
    time.sleep(config.sleep)
    if config.fail:
        raise RuntimeError(f"toy failure for value {config.value}")
    progress(1, 1)
    return Result(
        metrics={"square": config.value**2, "draw": float(torch.rand(()))},
        tables={"values": pd.DataFrame({"value": [config.value], "double": [2 * config.value]})},
        arrays={"value": np.array([config.value])},
    )


def figures(results: Results) -> dict[str, Figure]:
    """The squares against the values."""
    figure = Figure(figsize=(3, 2))
    runs = results.runs
    figure.subplots().plot(runs["config.value"], runs["metrics.square"], "o")
    return {"squares": figure}
