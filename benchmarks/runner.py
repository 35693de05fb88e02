"""Runner overhead and parallel speed-up on the local executor.

    python benchmarks/runner.py

1. Per-run overhead (store writes, scheduling, pickling) for a trivial study on 1 local
   worker: (T(220 runs) − T(20 runs)) / 200 on one started pool. Target < 50 ms.
2. A CPU-bound sweep (16 runs of 0.5 s CPU each) on 2 workers against 1 worker, each pool
   started first (a worker's one-time start, importing torch, takes seconds). Target ratio
   ≤ 0.65. Other load on the machine makes both numbers noisy.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _busy_study, also for workers

from ntkscope.runner import LocalExecutor, expand, run_sweep

STUDY = "_busy_study"


def sweep_seconds(executor, runs: int, spin: float, offset: int) -> float:
    """Wall time of a sweep of ``runs`` fresh configs into a new store."""
    plan = expand({"study": STUDY, "fixed": {"spin": spin},
                   "product": {"index": {"range": [offset, offset + runs]}}})  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = run_sweep(plan, out, executor)
        seconds = time.perf_counter() - start
    assert summary.done == runs, summary
    return seconds


@contextlib.contextmanager
def started(workers: int) -> Iterator[LocalExecutor]:
    """A local pool whose workers have started (imported ntkscope: seconds, once)."""
    with LocalExecutor(workers) as executor:
        sweep_seconds(executor, workers, 0.3, offset=10**6)  # one run per worker
        yield executor


def main() -> None:
    small, large = 20, 220
    with started(1) as executor:
        short = sweep_seconds(executor, small, 0.0, offset=0)
        long = sweep_seconds(executor, large, 0.0, offset=small)
    overhead = 1e3 * (long - short) / (large - small)
    print(f"per-run overhead, local executor, 1 worker: {overhead:.1f} ms (target < 50)")
    seconds = {}
    for workers in (1, 2):
        with started(workers) as executor:
            seconds[workers] = sweep_seconds(executor, 16, 0.5, offset=0)
    print(f"CPU-bound sweep, 16 x 0.5 s CPU: 1 worker {seconds[1]:.2f} s, 2 workers "
          f"{seconds[2]:.2f} s, ratio {seconds[2] / seconds[1]:.2f} (target <= 0.65)")  # fmt: skip


if __name__ == "__main__":
    main()
