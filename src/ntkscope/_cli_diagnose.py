"""``ntkscope diagnose FILE.py:FUNCTION``: is the user's network in the kernel regime?

Prints the verdict with the numbers and thresholds behind it and writes the report
directory (`ntkscope.report.diagnosis`). Exit status: 0 with a verdict, 1 when training
diverged (the report is still written), 2 for bad input (one ``error:`` line).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ntkscope._console import fail, progress_bar
from ntkscope.diagnosis import Diagnosis, Verdict, diagnose, load_factory

_COLORS = {
    Verdict.KERNEL_REGIME: "green",
    Verdict.PARTLY: "yellow",
    Verdict.FEATURE_LEARNING: "magenta",
    Verdict.DIVERGED: "red",
}


def _table(diagnosis: Diagnosis) -> Table:
    color = _COLORS[diagnosis.verdict]
    table = Table(title=f"verdict: [bold {color}]{diagnosis.verdict.value}[/]")
    for column in ("criterion", "value", "kernel regime", "feature learning", "status"):
        table.add_column(column)
    for c in diagnosis.criteria:
        rich = "—" if c.rich_above == float("inf") else f"> {c.rich_above:g}"
        table.add_row(c.name, f"{c.value:.4g}", f"< {c.lazy_below:g}", rich, c.status)
    return table


def _facts(diagnosis: Diagnosis) -> list[str]:
    n = diagnosis.numbers
    lines = [
        f"training: {diagnosis.settings['optimizer']}, lr {diagnosis.settings['lr']:.4g}, "
        f"{n['steps_taken']} steps; train loss {n['train_loss']:.4g}, "
        f"test loss {n['test_loss']:.4g}",
        f"relative parameter change {n['param_change']:.4g}",
        f"eNTK method: {diagnosis.settings.get('method', 'auto')}",
    ]
    predicted = n.get("predicted_train_loss")
    if predicted is not None and math.isfinite(predicted):
        lines.append(f"NTK-predicted final train loss {predicted:.4g} (eNTK at t = 0)")
    if n.get("infinite_distance_single") is not None:
        lines.append(
            f"distance to the infinite NTK at init: one seed {n['infinite_distance_single']:.4g}, "
            f"seed mean {n['infinite_distance_mean']:.4g}"
        )
    return lines + diagnosis.notes


def diagnose_command(
    model: Annotated[
        str, typer.Argument(metavar="FILE.py:FUNCTION", help="Function building the model.")
    ],
    data: Annotated[
        str, typer.Option(help="Built-in data set (digits, gaussian) or a .npz with x, y.")
    ] = "digits",
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("ntkscope-diagnosis"),
    loss: Annotated[str, typer.Option(metavar="mse|cross_entropy")] = "mse",
    optimizer: Annotated[str, typer.Option(metavar="sgd|adam")] = "sgd",
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: N/λ_max for SGD, 1e-3 Adam).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 300,
    batch_size: Annotated[int | None, typer.Option(help="Mini-batch size (default: full).")] = None,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.0,
    n_train: Annotated[int, typer.Option(help="Training examples.")] = 256,
    n_test: Annotated[int, typer.Option(help="Test examples.")] = 256,
    probe: Annotated[int, typer.Option(help="Probe examples for the kernels.")] = 128,
    seeds: Annotated[int, typer.Option(help="Initializations for the dispersion.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the data split and the trained model.")] = 0,
) -> None:
    """Is this network in the kernel regime? Measures, prints a verdict, writes a report.

    The verdict's thresholds are printed with it (and documented in ntkscope.diagnosis).
    """
    console = Console()
    try:
        factory = load_factory(model)
        with progress_bar(console) as bar:
            task = bar.add_task("diagnosis", total=None)

            def show(phase: str, done: int, total: int) -> None:
                bar.update(task, description=phase, completed=done, total=total)

            diagnosis = diagnose(
                factory, data, loss=loss, optimizer=optimizer, lr=lr, steps=steps,
                batch_size=batch_size, momentum=momentum, n_train=n_train, n_test=n_test,
                probe=probe, seeds=seeds, seed=seed, progress=show,
            )  # fmt: skip
    except (ValueError, TypeError) as error:
        fail(str(error))
    from ntkscope.report.diagnosis import write_report

    try:
        page = write_report(diagnosis, out)
    except OSError as error:
        fail(f"out: cannot write the report to {str(out)!r}: {error.strerror}")
    console.print(_table(diagnosis))
    for line in _facts(diagnosis):
        console.print(f"  {line}")
    console.print(f"report: {page}")
    if diagnosis.verdict is Verdict.DIVERGED:
        fail(diagnosis.notes[0], status=1)
