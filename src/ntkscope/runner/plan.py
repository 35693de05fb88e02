"""A sweep's cost before it runs: each config's estimate, the totals, what does not fit.

Each study may estimate one run (``cost(config)``, `ntkscope.studies.Cost`: seconds on the
machine its cost model was calibrated on, with one torch thread, and the peak memory of the
worker). A `Plan` collects the estimates of a sweep's configs; `check_memory` refuses, before
anything runs, the configs whose estimated peak exceeds the memory of one worker, so that a
sweep does not fail hours in, or take its machine down, on a config that could never fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ntkscope.runner.sweep import Sweep
from ntkscope.studies import Cost


@dataclass(frozen=True)
class Plan:
    """The estimated costs of a sweep's configs (None where the study has no cost model).

    Attributes:
        sweep: the validated sweep.
        costs: one estimate per config, in the sweep's order.
    """

    sweep: Sweep
    costs: tuple[Cost | None, ...]

    @property
    def study(self) -> str:
        """The sweep's study."""
        return self.sweep.study.name

    @property
    def seconds(self) -> float:
        """Total estimated run time of the configs (one after another; NaN if any unknown)."""
        return sum(c.seconds if c else math.nan for c in self.costs)

    @property
    def longest(self) -> float:
        """The longest estimated run (NaN if any unknown)."""
        return max((c.seconds if c else math.nan for c in self.costs), default=0.0)

    @property
    def memory(self) -> float:
        """The largest estimated peak memory of one run (NaN if any unknown)."""
        return max((c.memory if c else math.nan for c in self.costs), default=0.0)

    def over(self, worker_memory: float) -> list[int]:
        """Indices of the configs whose estimated peak memory exceeds ``worker_memory``."""
        return [i for i, c in enumerate(self.costs) if c and c.memory > worker_memory]


def plan(sweep: Sweep) -> Plan:
    """Estimate every config of ``sweep`` with its study's cost model; nothing runs."""
    estimate = sweep.study.cost
    return Plan(sweep, tuple(estimate(c) if estimate else None for c in sweep.configs))


def wall_time(plans: Sequence[Plan], workers: int) -> float:
    """Estimated wall time of the sweeps, one after another, each on ``workers`` workers:
    per sweep the larger of its total time / workers and its longest run."""
    return sum(max(p.seconds / workers, p.longest) for p in plans)


def within_memory(plans: Sequence[Plan], worker_memory: float, allow: bool) -> list[Sweep]:
    """The sweeps to run: refused when a config's estimated peak exceeds ``worker_memory``
    bytes, unless ``allow``.

    Raises:
        ValueError: naming ``worker_memory``, the configs (study, hash, estimate) over it,
            and the two ways on (a larger worker, or ``--allow-over-memory``).
    """
    over = [(p, i) for p in plans for i in p.over(worker_memory)]
    if over and not allow:
        listed = "; ".join(
            f"{p.study} {p.sweep.hashes()[i][:12]} ({p.costs[i].memory / 1e9:.1f} GB)"
            for p, i in over[:5]
        )
        more = f" and {len(over) - 5} more" if len(over) > 5 else ""
        raise ValueError(
            f"worker_memory: {len(over)} configs are estimated to need more than "
            f"{worker_memory / 1e9:.1f} GB per worker: {listed}{more}. Give workers more "
            "memory (--worker-memory), or run them anyway with --allow-over-memory"
        )
    return [p.sweep for p in plans]
