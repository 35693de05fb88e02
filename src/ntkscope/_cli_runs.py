"""CLI commands for runs at scale: ``study list|run``, ``sweep``, ``report``, ``reproduce``.

``sweep`` and ``reproduce`` estimate every config's time and memory first (``--plan`` prints
the estimate and runs nothing) and refuse configs estimated over a worker's memory.

Bad input (unknown study or field, wrong type, empty grid, unreachable scheduler) prints one
line ``error: ...`` and exits 2 before anything runs; a sweep whose runs failed exits 1
after running everything else and storing the errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from ntkscope import studies
from ntkscope._checks import choice, memory_bytes, positive_int
from ntkscope._cli_plan import print_plan
from ntkscope._console import fail
from ntkscope.report import write_report
from ntkscope.report.study_report import FINDINGS, RULES
from ntkscope.runner import (
    DaskExecutor,
    Executor,
    InlineExecutor,
    Interrupted,
    LocalExecutor,
    Summary,
    Sweep,
    expand,
    load_sweep,
    parse_assignments,
    run_sweep,
)
from ntkscope.runner.executors import cores
from ntkscope.runner.plan import plan, within_memory
from ntkscope.runner.sweep import config_hash, validate
from ntkscope.runner.task import Task
from ntkscope.studies import Preset

study_app = typer.Typer(no_args_is_help=True, help="Studies: list them, run one config.")

Workers = Annotated[
    int | None, typer.Option(help="Local worker processes (default: one per core).")
]
Scheduler = Annotated[
    str | None, typer.Option(help="Dask scheduler address, e.g. tcp://host:8786.")
]
DaskLocal = Annotated[
    int | None, typer.Option(help="Start a Dask LocalCluster of N single-threaded workers.")
]
Threads = Annotated[int, typer.Option(help="torch threads per run (same value, same results).")]
ShowPlan = Annotated[
    bool, typer.Option("--plan", help="Print the estimated time and memory; run nothing.")
]
WorkerMemory = Annotated[
    str | None,
    typer.Option(help="Memory of one worker, e.g. 16GB; configs estimated above it are refused."),
]
AllowOverMemory = Annotated[
    bool, typer.Option(help="Run configs estimated to exceed --worker-memory anyway.")
]


def _guarded(action: Callable[[], None], resume: str | None = None) -> None:
    """Run ``action``; the library's ValueError/TypeError become ``error: ...``, exit 2;
    Ctrl-C in a sweep says what is done and the command ``resume`` that goes on, exit 130."""
    try:
        action()
    except (ValueError, TypeError) as error:
        fail(str(error))
    except Interrupted as stop:
        fail(
            f"interrupted: {stop.study}: {stop.done} of {stop.configs} runs done; the store "
            f"is consistent (runs in flight run again). Resume with: {resume}",
            status=130,
        )


@contextlib.contextmanager
def _executor(
    workers: int | None, scheduler: str | None, dask_local: int | None
) -> Iterator[Executor]:
    """The executor the options choose: local processes unless a Dask option is given."""
    chosen = [name for name, v in [("workers", workers), ("scheduler", scheduler),
                                   ("dask-local", dask_local)] if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise ValueError(f"{chosen[1]}: give only one of --workers, --scheduler, --dask-local")
    if workers is None and (scheduler is not None or dask_local is not None):
        executor = DaskExecutor(scheduler, dask_local)
    else:
        executor = LocalExecutor(workers)
    with executor:
        yield executor


def _run(
    plans: list[Sweep], out: Path, where: tuple[int | None, str | None, int | None], threads: int
) -> list[Summary]:
    """Run the sweeps on the executor that ``where`` = (workers, scheduler, dask_local) picks."""
    with _executor(*where) as executor:
        return [run_sweep(plan, out, executor, threads=threads) for plan in plans]


def _planned(
    sweeps: list[Sweep], memory: tuple[str | int, bool], show: bool, workers: int
) -> list[Sweep] | None:
    """The sweeps to run after the memory check (``memory`` = (worker memory, allow over));
    None when ``show``: the plan is printed instead, and nothing runs."""
    worker_memory = memory_bytes(memory[0], "worker_memory")
    plans = [plan(s) for s in sweeps]
    if show:
        print_plan(plans, worker_memory, workers)
        return None
    return within_memory(plans, worker_memory, memory[1])


def _workers(workers: int | None, dask_local: int | None) -> int:
    """Workers the estimate of the wall time assumes: the local or Dask-local count, else the
    cores (a remote scheduler's workers are not known before connecting)."""
    return workers or dask_local or cores()


def _report_failures(summaries: list[Summary]) -> None:
    """Print each summary; exit 1 when a run failed (its error is in the store)."""
    console = Console()
    for summary in summaries:
        console.print(str(summary))
    failed = [o for s in summaries for o in s.outcomes if not o.ok]
    for outcome in failed:
        last = outcome.error.strip().splitlines()[-1]
        Console(stderr=True, soft_wrap=True).print(f"failed {outcome.hash[:12]}: {last}")
    if failed:
        raise typer.Exit(1)


@study_app.command("list")
def study_list() -> None:
    """The registered studies, their config fields (with defaults) and presets."""
    table = Table("study", "what it measures", "fields (defaults)", "presets")
    for name in studies.names():
        study = studies.get(name)
        fields = ", ".join(f"{k}={v}" for k, v in study.config().model_dump(mode="json").items())
        table.add_row(name, study.summary, fields, ", ".join(study.presets))
    Console().print(table)


def _metrics_table(name: str, metrics: dict[str, float]) -> Table:
    table = Table("metric", "value", title=name)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.6g}")
    return table


@study_app.command("run")
def study_run(
    name: Annotated[str, typer.Argument(help="A registered study or a module path.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="field=value (TOML value), repeatable.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Store the run in this results dir.")] = None,
    threads: Threads = 1,
) -> None:
    """Run one config of a study in this process and print its metrics."""

    def action() -> None:
        positive_int(threads, "threads")  # run_sweep checks it, the inline task does not
        study = studies.get(name)
        config = validate(study, parse_assignments(set_ or []))
        if out is not None:
            summary = run_sweep(Sweep(study, (config,)), out, InlineExecutor(), threads=threads)
            outcome = summary.outcomes[0] if summary.outcomes else None
        else:
            task = Task(name, config_hash(name, config), config.model_dump_json(), threads)
            [outcome] = InlineExecutor().run([task])
        if outcome is None:
            Console().print(f"{name}: already done in {out}")
        elif outcome.ok:
            Console().print(_metrics_table(name, outcome.result.metrics))
        else:
            Console(stderr=True).print(outcome.error)
            raise typer.Exit(1)

    _guarded(action)


def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (TOML).")],
    out: Annotated[Path, typer.Option(help="Results directory (created; re-runs resume).")],
    workers: Workers = None,
    scheduler: Scheduler = None,
    dask_local: DaskLocal = None,
    threads: Threads = 1,
    show_plan: ShowPlan = False,
    worker_memory: WorkerMemory = None,
    allow_over_memory: AllowOverMemory = False,
) -> None:
    """Run every config of a sweep file not yet done in OUT; failed runs do not stop it.
    Configs estimated to need more than --worker-memory (default 16GB) are refused first."""

    def action() -> None:
        memory = (worker_memory or Preset.PAPER.worker_memory, allow_over_memory)
        sweeps = _planned([load_sweep(file)], memory, show_plan, _workers(workers, dask_local))
        if sweeps is not None:
            _report_failures(_run(sweeps, out, (workers, scheduler, dask_local), threads))

    _guarded(action, resume=f"ntkscope sweep {file} --out {out}")


def _findings(page: Path) -> None:
    """Print the findings table written beside the report ``page``, then the page's path."""
    frame = pd.read_csv(page.parent / FINDINGS.name).fillna("")
    table = Table("study", "claim (source)", "measured, 95% intervals", "verdict",
                  title="published claims tested", show_lines=True)  # fmt: skip
    for row in frame.itertuples():
        table.add_row(row.study, f"{row.claim} ({row.source})", row[4], row.verdict)
    console = Console()
    console.print(table)
    console.print(f"rules: {RULES} The rule of each row is in the report.")
    console.print(f"wrote {page}")


def report(
    directory: Annotated[Path, typer.Argument(help="Results directory.")],
) -> None:
    """Render DIR's runs as one static HTML page (findings table, figures, tables, configs,
    versions, times) and print its findings table."""
    _guarded(lambda: _findings(write_report(directory)))


def reproduce(
    preset: Annotated[
        str,
        typer.Option(
            metavar="quick|standard|paper",
            help="quick: minutes, a smoke run; standard: the evidence, ≤ 2 h on 2 cores; "
            "paper: the papers' scale, for a GPU or a cluster ('full' is its old name).",
        ),
    ] = "quick",
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results"),
    workers: Workers = None,
    scheduler: Scheduler = None,
    dask_local: DaskLocal = None,
    threads: Threads = 1,
    show_plan: ShowPlan = False,
    worker_memory: WorkerMemory = None,
    allow_over_memory: AllowOverMemory = False,
) -> None:
    """Run every registered study's published-finding sweep, then write the report. Configs
    estimated to need more than --worker-memory (default: 10GB for quick and standard, 16GB
    for paper) are refused before anything runs."""

    def action() -> None:
        chosen = choice(Preset, preset, "preset")
        sweeps = [expand(studies.get(n).presets[chosen], n) for n in studies.names()]
        memory = (worker_memory or chosen.worker_memory, allow_over_memory)
        sweeps = _planned(sweeps, memory, show_plan, _workers(workers, dask_local))
        if sweeps is None:
            return
        summaries = _run(sweeps, out, (workers, scheduler, dask_local), threads)
        _findings(write_report(out))
        _report_failures(summaries)

    _guarded(action, resume=f"ntkscope reproduce --preset {preset} --out {out}")
