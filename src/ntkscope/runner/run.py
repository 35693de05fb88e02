"""Run a sweep into a store: skip what is done, execute the rest, record every outcome.

The parent process is the store's only writer; workers return outcomes, which are recorded
as they arrive, so a killed sweep loses at most the runs in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ntkscope._checks import positive_int
from ntkscope.runner.executors import Executor
from ntkscope.runner.progress import SweepProgress
from ntkscope.runner.store import Store
from ntkscope.runner.sweep import Sweep, canonical_json
from ntkscope.runner.task import Outcome, Task


@dataclass(frozen=True)
class Summary:
    """Counts of one sweep: configs, skipped (done before), done and failed now."""

    study: str
    configs: int
    skipped: int
    done: int
    failed: int
    outcomes: tuple[Outcome, ...]

    def __str__(self) -> str:
        return (
            f"{self.study}: {self.configs} configs, {self.skipped} already done, "
            f"{self.done} done now, {self.failed} failed"
        )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run_sweep`. The store stays consistent: finished runs are recorded,
    runs in flight stay ``running`` and run again when the sweep is resumed.

    Attributes:
        study: the sweep's study.
        configs: configs in the sweep.
        done: of them, done in the store (before and during this call).
    """

    def __init__(self, study: str, configs: int, done: int) -> None:
        super().__init__(f"{study}: {done} of {configs} runs done")
        self.study, self.configs, self.done = study, configs, done


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    executor: Executor,
    *,
    threads: int = 1,
    console: Console | None = None,
) -> Summary:
    """Execute the configs of ``sweep`` not yet done in the store at ``out``.

    Args:
        sweep: validated configs (`ntkscope.runner.sweep.load_sweep` or ``expand``).
        out: results directory (created if needed).
        executor: an entered executor (`LocalExecutor`, `DaskExecutor`, `InlineExecutor`).
        threads: torch threads per run; the same value gives the same results everywhere.
        console: where the progress bar draws (default stderr, only on a terminal).

    Returns:
        The counts, and the outcomes of this call (results included).

    Raises:
        Interrupted: on Ctrl-C, with the counts so far.
    """
    threads = positive_int(threads, "threads")
    configs = {h: canonical_json(c) for h, c in zip(sweep.hashes(), sweep.configs, strict=True)}
    outcomes = []
    with Store(out) as store:
        todo = store.add(sweep.study.name, configs)
        full = dict(zip(sweep.hashes(), sweep.configs, strict=True))
        tasks = [Task(sweep.study.name, h, full[h].model_dump_json(), threads) for h in todo]
        store.mark_running(todo)
        with SweepProgress(sweep.study.name, len(tasks), console) as progress:
            try:
                for outcome in executor.run(tasks):
                    store.record(outcome)
                    progress.advance(outcome.ok)
                    outcomes.append(outcome)
            except KeyboardInterrupt:
                done = len(configs) - len(todo) + sum(o.ok for o in outcomes)
                raise Interrupted(sweep.study.name, len(configs), done) from None
    failed = sum(not o.ok for o in outcomes)
    return Summary(
        sweep.study.name, len(configs), len(configs) - len(todo), len(outcomes) - failed, failed,
        tuple(outcomes),
    )  # fmt: skip
