"""Command line: ``ntkscope kernel``; ``diagnose`` (`ntkscope._cli_diagnose`); ``study``,
``sweep``, ``report``, ``reproduce`` (`ntkscope._cli_runs`).

Every command turns the library's ValueError and TypeError (which name the offending
argument) into one line ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import nn

from ntkscope import __version__, metrics, models
from ntkscope._checks import choice
from ntkscope._cli_diagnose import diagnose_command
from ntkscope._cli_runs import report, reproduce, study_app, sweep
from ntkscope._console import fail as _fail
from ntkscope._console import progress_bar
from ntkscope.data import Dataset, DatasetName, load
from ntkscope.diagnosis.infinite import infinite_reference
from ntkscope.diagnosis.inputs import build, fit_inputs, load_factory
from ntkscope.kernels import Method, Mode, empirical_ntk, infinite_kernels, resolve_method
from ntkscope.models import Parameterization

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def _root() -> None:
    """ntkscope: can NTK theory be trusted for this network?"""


class ModelKind(StrEnum):
    """Networks the CLI builds.

    MLP: `ntkscope.models.mlp` on flat inputs.
    CNN: `ntkscope.models.cnn` on image inputs (a 2×2 pooling after every block but the last).
    """

    MLP = "mlp"
    CNN = "cnn"


class DType(StrEnum):
    """Floating dtype of the model, the inputs and the empirical kernel.

    FLOAT32: the fast default; entries carry relative rounding errors ~1e-7 of the largest,
        so eigenvalues (always computed in float64) are resolved down to ~1e-6·λ_max.
    FLOAT64: for condition numbers beyond ~1e5 or tolerance studies; up to twice as slow.
    """

    FLOAT32 = "float32"
    FLOAT64 = "float64"


@dataclass(frozen=True)
class KernelSettings:
    """The options of ``ntkscope kernel``, saved as JSON beside the kernel."""

    model: str
    width: int
    depth: int
    activation: str
    parameterization: str
    sigma_w: float
    sigma_b: float
    seed: int
    data: str
    n: int
    data_seed: int
    method: str
    mode: str
    dtype: str
    memory_budget: str | None


@dataclass(frozen=True)
class _Outcome:
    """What ``ntkscope kernel`` computed; ``infinite`` is (nngp, ntk) or why it is n/a."""

    kernel: torch.Tensor
    method: str
    seconds: float
    infinite: tuple[torch.Tensor, torch.Tensor] | str
    infinite_seconds: float
    program: str = ""


def _is_file(model: str) -> bool:
    return ":" in model


def _network(s: KernelSettings, data: Dataset) -> tuple[nn.Module, torch.Tensor]:
    """The model of the settings and its inputs: flat for an MLP, images for a CNN; a
    user's FILE.py:FUNCTION is built with the seed and fed as it accepts the data."""
    if _is_file(s.model):
        network = build(load_factory(s.model), s.seed).to(data.x.dtype)
        return network, fit_inputs(network, data)(data.x)
    common = dict(
        activation=s.activation,
        parameterization=s.parameterization,
        sigma_w=s.sigma_w,
        sigma_b=s.sigma_b,
        seed=s.seed,
    )
    d_out = data.n_classes or 1
    if choice(ModelKind, s.model, "model") is ModelKind.MLP:
        model, x = models.mlp(data.x.shape[1], s.width, s.depth, d_out, **common), data.x
    else:
        x = data.as_images()
        model = models.cnn(x.shape[1], s.width, s.depth, d_out, **common)
    return model.to(data.x.dtype), x


def _spectrum(kernel: torch.Tensor) -> tuple[float, float, float]:
    """λ_min, λ_max and condition number of a symmetric kernel, in float64."""
    eigenvalues = metrics.spectrum(kernel)
    low, high = float(eigenvalues[-1]), float(eigenvalues[0])
    return low, high, high / low if low > 0 else math.inf


def _infinite_ntk(s: KernelSettings, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | str:
    """(nngp, ntk) of the infinite MLP, or why no comparison is meaningful."""
    if s.model != ModelKind.MLP:
        return "n/a (infinite NTK computed for MLPs only)"
    if s.parameterization != Parameterization.NTK:
        return "n/a (standard parameterization)"
    return infinite_kernels(
        x,
        depth=s.depth,
        activation=s.activation,
        sigma_w=s.sigma_w,
        sigma_b=s.sigma_b,
        memory_budget=s.memory_budget,
    )


def _save(path: Path, s: KernelSettings, r: _Outcome, data: Dataset) -> None:
    """kernel, y, nngp and ntk (when computed) and the settings as a JSON string."""
    arrays = {"kernel": r.kernel.numpy(), "y": data.y.numpy()}
    if not isinstance(r.infinite, str):
        arrays |= {"nngp": r.infinite[0].numpy(), "ntk": r.infinite[1].numpy()}
    settings = {**asdict(s), "method_used": r.method, "version": __version__}
    try:
        with path.open("wb") as file:
            np.savez(file, settings=np.array(json.dumps(settings)), **arrays)
    except OSError as error:
        _fail(f"out: cannot write {str(path)!r}: {error.strerror}")


def _model_summary(s: KernelSettings, x: torch.Tensor, d_out: int) -> str:
    shape = "×".join(str(n) for n in x.shape[1:])
    if _is_file(s.model):
        return f"{s.model} {shape} → {d_out}"
    hidden = f"{s.width}×{s.depth}" if s.depth else "no hidden layer"
    return (
        f"{s.model} {shape} → {hidden} → {d_out}, {s.activation}, "
        f"σ_w = {s.sigma_w:.4g}, σ_b = {s.sigma_b:.4g}"
    )


def _table(rows: list[tuple[str, str]]) -> Table:
    table = Table(title="empirical NTK", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def _distance(kernel: torch.Tensor, infinite: tuple[torch.Tensor, torch.Tensor] | str) -> str:
    """‖Θ̂ − Θ‖_F / ‖Θ‖_F of the trace kernel to the infinite NTK (docs/conventions.md)."""
    if isinstance(infinite, str):
        return infinite
    ntk = infinite[1]
    distance = torch.linalg.norm(kernel.to(torch.float64) - ntk) / torch.linalg.norm(ntk)
    return f"{float(distance):.4f} (infinite NTK of this architecture)"


_ACTIVATIONS = "One of " + ", ".join(name.value for name in models.ActivationName) + "."
"""Help of ``--activation``: every built-in name (`ntkscope.models.ActivationName`)."""


@app.command()
def kernel(
    model: Annotated[
        str,
        typer.Option(
            metavar="mlp|cnn|FILE.py:FUNCTION", help="Network, or a function building one."
        ),
    ] = "mlp",
    width: Annotated[int, typer.Option(help="Hidden width (CNN: channels).")] = 512,
    depth: Annotated[int, typer.Option(help="Hidden layers (CNN: conv blocks).")] = 3,
    activation: Annotated[str, typer.Option(help=_ACTIVATIONS)] = "relu",
    parameterization: Annotated[str, typer.Option(metavar="ntk|standard")] = "ntk",
    sigma_w: Annotated[float, typer.Option(help="Weight standard deviation σ_w.")] = 2**0.5,
    sigma_b: Annotated[float, typer.Option(help="Bias standard deviation σ_b.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the initialization.")] = 0,
    data: Annotated[str, typer.Option(metavar="digits|gaussian", help="Data set.")] = "digits",
    n: Annotated[int, typer.Option(help="Number of examples.")] = 256,
    data_seed: Annotated[int, typer.Option(help="Seed of the data subset / sample.")] = 0,
    method: Annotated[str, typer.Option(metavar="auto|structured|jacobian|ntvp|autograd")] = "auto",
    mode: Annotated[
        str, typer.Option(metavar="trace|full", help="full: every output pair, (N, N, O, O).")
    ] = "trace",
    dtype: Annotated[
        str, typer.Option(metavar="float32|float64", help="eigenvalues are always float64.")
    ] = "float32",
    memory_budget: Annotated[
        str | None, typer.Option(help="Working memory bound, e.g. 2GB.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Save kernels, labels and settings to this .npz.")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="Compute tile by tile into this zarr store (resumable).")
    ] = None,
    kind: Annotated[str, typer.Option(metavar="entk|infinite", help="With --store.")] = "entk",
    dask_local: Annotated[
        int | None, typer.Option(help="With --store: a LocalCluster of W workers.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="With --store: a Dask scheduler, tcp://host:8786.")
    ] = None,
    ridge: Annotated[
        float | None, typer.Option(help="With --store: kernel ridge, λ relative to tr(K)/N.")
    ] = None,
    n_test: Annotated[
        int | None, typer.Option(help="With --ridge: rows scored (default N/5).")
    ] = None,
) -> None:
    """Empirical NTK of a freshly initialized network on a data set, against its infinite limit.

    Prints the spectrum of the trace kernel (1/O)·tr Θ̂, with eigenvalues in float64.

    For an MLP in NTK parameterization, also ‖Θ̂ − Θ‖_F / ‖Θ‖_F to the infinite NTK Θ (~1/√width);
    for a model from FILE.py:FUNCTION (called with --seed), the distance to the infinite NTK
    of its own architecture (`ntkscope.infinite_width`) and the kernel program behind it.

    With --store: the kernel (--kind entk, or the infinite NNGP and NTK) goes tile by tile
    into a zarr store, resumable, inline or on Dask; --model may be path/to/file.py:function
    and --data digits, gaussian, mnist or a .npz file (`ntkscope._cli_kernel_store`).
    """
    s = KernelSettings(
        model, width, depth, activation, parameterization, sigma_w, sigma_b, seed, data, n,
        data_seed, method, mode, dtype, memory_budget,
    )  # fmt: skip
    _refuse_unused(s, store is not None, kind=kind, dask_local=dask_local, scheduler=scheduler,
                   ridge=ridge, n_test=n_test)  # fmt: skip
    if out is not None and out.suffix != ".npz":
        _fail(f"out: expected a .npz file name (numpy.savez writes the kernels), got {str(out)!r}")
    if store is not None:
        # imported here: zarr and the Dask runner cost ~1 s that other commands need not pay
        from ntkscope._cli_kernel_store import StoreOptions, kernel_store_command

        options = StoreOptions(store, kind, dask_local, scheduler, ridge, n_test)
        try:
            ok = kernel_store_command(s, options, _network)
        except (ValueError, TypeError) as error:
            _fail(str(error))
        raise typer.Exit(0 if ok else 1)
    if out is not None and not out.parent.is_dir():
        _fail(f"out: directory {str(out.parent)!r} does not exist")
    try:
        _kernel(s, out)
    except (ValueError, TypeError) as error:
        _fail(str(error))


_STORE_ONLY = ("kind", "dask_local", "scheduler", "ridge", "n_test")
_NOT_INFINITE = ("width", "parameterization", "seed", "method", "mode", "dtype")


def _refuse_unused(s: KernelSettings, stored: bool, **store_options: object) -> None:
    """Refuse options set away from their defaults that would be silently ignored: the store
    options without --store, and with --kind infinite those of the finite network (its
    kernels are float64 and depend only on depth, activation, σ_w, σ_b and the data; a
    standard parameterization would need the widths, not supported here)."""
    defaults = {name: p.default for name, p in inspect.signature(kernel).parameters.items()}
    if not stored:
        given = [name for name in _STORE_ONLY if store_options[name] != defaults[name]]
        if given:
            _fail(f"{_option(given[0])}: needs --store (it applies to a stored kernel only)")
    elif store_options["kind"] == "infinite":
        given = [name for name in _NOT_INFINITE if getattr(s, name) != defaults[name]]
        if given:
            _fail(
                f"{_option(given[0])}: does not apply to --kind infinite (the infinite NNGP "
                "and NTK, NTK parameterization in float64, depend only on --depth, "
                "--activation, --sigma-w, --sigma-b and the data)"
            )


def _option(name: str) -> str:
    return name.replace("_", "-")


def _compute(s: KernelSettings, network: nn.Module, data: Dataset, x: torch.Tensor) -> _Outcome:
    """The eNTK (with a progress bar on a terminal) and the infinite kernels, timed."""
    kind, method = choice(Mode, s.mode, "mode"), choice(Method, s.method, "method")
    console = Console()
    bar = progress_bar(console)
    with bar:
        used = resolve_method(network, x, mode=kind, method=method, memory_budget=s.memory_budget)
        used = f"auto → {used.value}" if method is Method.AUTO else used.value
        task = bar.add_task("eNTK tiles", total=None)
        start = time.perf_counter()
        k = empirical_ntk(
            network,
            x,
            mode=kind,
            method=method,
            memory_budget=s.memory_budget,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        seconds = time.perf_counter() - start
        bar.add_task("infinite NTK", total=None)
        program = ""
        if _is_file(s.model):  # the user's architecture: its kernel program
            kernels, program = infinite_reference(network, x)
            infinite = program if kernels is None else kernels
        else:
            infinite = _infinite_ntk(s, data.x)
    seconds_infinite = time.perf_counter() - start - seconds
    return _Outcome(k, used, seconds, infinite, seconds_infinite, program)


def _rows(
    s: KernelSettings, data: Dataset, network: nn.Module, x: torch.Tensor, r: _Outcome
) -> list[tuple[str, str]]:
    """The lines of the summary table, (label, value)."""
    trace = metrics.scalar_kernel(r.kernel)
    low, high, condition = _spectrum(trace)
    n_params = sum(p.numel() for p in network.parameters() if p.requires_grad)
    times = f"eNTK {r.seconds:.2f} s"
    if not isinstance(r.infinite, str):
        times += f", infinite NTK {r.infinite_seconds:.2f} s"
    return [
        ("data", f"{s.data}, N = {len(data)}"),
        ("model", _model_summary(s, x, data.n_classes or 1)),
        ("parameters", f"{n_params:,} ({s.parameterization} parameterization)"),
        ("eNTK", f"{tuple(r.kernel.shape)} {s.mode}, {s.dtype}"),
        ("method", r.method),
        ("wall time", times),
        ("λ_min, λ_max", f"{low:.4g}, {high:.4g} (trace kernel, float64)"),
        ("condition number", f"{condition:.4g}" + (" (λ_min ≤ 0)" if low <= 0 else "")),
        ("‖Θ̂ − Θ‖/‖Θ‖", _distance(trace, r.infinite)),
    ]


def _kernel(s: KernelSettings, out: Path | None) -> None:
    """``ntkscope kernel`` with unchecked settings; library errors propagate."""
    torch_dtype = getattr(torch, choice(DType, s.dtype, "dtype").value)
    data = load(choice(DatasetName, s.data, "data"), s.n, seed=s.data_seed, dtype=torch_dtype)
    network, x = _network(s, data)
    outcome = _compute(s, network, data, x)
    console = Console()
    console.print(_table(_rows(s, data, network, x, outcome)))
    if outcome.program and not isinstance(outcome.infinite, str):
        console.print(
            Text("kernel program of the infinite NTK:\n  " + outcome.program.replace("\n", "\n  "))
        )
    if out is not None:
        _save(out, s, outcome, data)
        console.print(Text(f"saved {out}"))


app.command("diagnose")(diagnose_command)

app.add_typer(study_app, name="study")
for _command in (sweep, report, reproduce):
    app.command()(_command)

if __name__ == "__main__":
    app()
