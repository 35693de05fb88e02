"""``ntkscope kernel --store K.zarr``: a kernel into a zarr store, inline or on Dask; ridge on it.

``--model`` is ``mlp``, ``cnn`` (the built-in networks of ``ntkscope kernel``) or
``path/to/file.py:function`` (a factory, as for ``ntkscope diagnose``; on a cluster every
worker imports the file from the same path and builds the model once). ``--data`` is
``digits``, ``gaussian``, ``mnist`` or a ``.npz`` file with arrays ``x`` and ``y``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from ntkscope import kernel_store
from ntkscope._checks import choice, nonnegative_real, positive_int
from ntkscope._console import fail
from ntkscope.data import Dataset
from ntkscope.data.tasks import load_task
from ntkscope.diagnosis.inputs import build, fit_inputs, load_factory, split
from ntkscope.runner.executors import DaskExecutor, InlineExecutor
from ntkscope.runner.progress import SweepProgress
from ntkscope.runner.tiled import TilesInterrupted, done_tiles


@dataclass(frozen=True)
class UserModel:
    """A picklable factory ``path/to/file.py:function`` seeded with ``seed``, cast to
    ``dtype``: built where it is called (once on each worker), from the file at that path."""

    spec: str
    seed: int
    dtype: str = "float32"

    def __call__(self) -> nn.Module:
        return build(load_factory(self.spec), self.seed).to(getattr(torch, self.dtype))


@dataclass(frozen=True)
class StoreOptions:
    """The options of ``ntkscope kernel`` that concern a store."""

    store: Path
    kind: str
    dask_local: int | None
    scheduler: str | None
    ridge: float | None
    n_test: int | None


def dataset(name: str, n: int, seed: int, dtype: torch.dtype) -> Dataset:
    """``n`` examples of a built-in data set or of a ``.npz`` file, drawn with ``seed``, read
    into ``dtype`` from the set's own values (float64 data lose nothing for float64); token
    ids too are cast to ``dtype``."""
    n = positive_int(n, "n")
    if name == "mnist":
        data = load_task("mnist", n_train=n, n_val=0, seed=seed, dtype=dtype).train
    else:
        data = split(name, n, 0, seed, asked="--n", dtype=dtype)[0]
    return replace(data, x=data.x.to(dtype))


def _job_arguments(settings, data: Dataset, kind: str, network: Callable) -> dict:
    """Inputs, model and kernel arguments of `kernel_store.compute` for the settings."""
    if kind == "entk":
        if ":" not in settings.model:
            model, x = network(settings, data)
            return {"x1": x, "model": model}
        factory = UserModel(settings.model, settings.seed, settings.dtype)
        model = factory()
        return {"x1": fit_inputs(model, data)(data.x), "model": factory}
    if ":" in settings.model:
        raise ValueError("kind: 'infinite' is computed for --model mlp or cnn only")
    common = dict(
        depth=settings.depth, activation=settings.activation, sigma_w=settings.sigma_w,
        sigma_b=settings.sigma_b,
    )  # fmt: skip
    if settings.model == "cnn":
        return {"x1": data.as_images(), "kind": "infinite_cnn", **common}
    return {"x1": data.x, **common}


def _executor(options: StoreOptions):
    if options.dask_local is not None and options.scheduler is not None:
        raise ValueError("scheduler: give --scheduler or --dask-local, not both")
    if options.dask_local is None and options.scheduler is None:
        return InlineExecutor()
    return DaskExecutor(options.scheduler, options.dask_local)


def compute_store(settings, options: StoreOptions, network: Callable, console: Console) -> bool:
    """Compute the kernel of the settings into the store; False if some tiles failed."""
    if not options.store.parent.is_dir():
        raise ValueError(f"store: directory {str(options.store.parent)!r} does not exist")
    # the infinite kernels are computed in float64: so are their data, whatever --dtype says
    dtype = torch.float64 if options.kind == "infinite" else getattr(torch, settings.dtype)
    data = dataset(settings.data, settings.n, settings.data_seed, dtype)
    arguments = {"kind": options.kind} | _job_arguments(settings, data, options.kind, network)
    if options.kind == "entk":
        arguments |= {"mode": settings.mode, "method": settings.method}
    with _executor(options) as executor, SweepProgress("kernel tiles", 0, console) as bar:
        report = kernel_store.compute(
            **arguments, store=options.store, memory_budget=settings.memory_budget,
            targets=data.y, client=getattr(executor, "client", None), progress=bar,
        )  # fmt: skip
    console.print(
        f"{options.store}: {report.tiles} tiles, {report.skipped} already stored, "
        f"{report.computed} computed, {len(report.failed)} failed"
    )
    for tile in report.failed:
        console.print(f"tile ({tile.i}, {tile.j}) failed: {tile.error}")
    return not report.failed


def ridge_on_store(options: StoreOptions, memory_budget: str | None, console: Console) -> None:
    """Fit kernel ridge on the first N − n_test rows of the stored kernel, score the rest.

    The ridge is relative to the mean eigenvalue tr(K)/N of the training kernel."""
    stored = kernel_store.open(options.store)
    n = stored.kernel.shape[0]
    n_test = max(1, n // 5) if options.n_test is None else positive_int(options.n_test, "n_test")
    if n_test >= n:
        raise ValueError(f"n_test: the kernel has {n} rows; leave some to train on")
    scale = float(stored.diagonal()[: n - n_test].mean())
    fit = stored.ridge(n - n_test, options.ridge * scale, memory_budget=memory_budget)
    y = kernel_store.targets_matrix(stored.targets, n)[n - n_test :]
    rows = [
        ("kernel", f"{stored.identity['kind']}, N = {n}, trained on {n - n_test}"),
        ("ridge", f"{options.ridge:g} × tr(K)/N = {options.ridge * scale:.4g}"),
        ("solver", f"{fit.solver}, {fit.iterations} passes, residual {fit.relative_residual:.2e}"),
        ("test MSE", f"{float((fit.predictions - y).square().mean()):.4g}"),
    ]
    if stored.targets.dtype.kind != "f":
        accuracy = (fit.predictions.argmax(1) == y.argmax(1)).double().mean()
        rows.append(("test accuracy", f"{float(accuracy):.4f}"))
    table = Table(title="kernel ridge on a stored kernel", show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def kernel_store_command(settings, options: StoreOptions, network: Callable) -> bool:
    """``ntkscope kernel --store``: compute (unless only ``--ridge`` on an existing store),
    then fit ridge if asked. False if some tiles failed. Ctrl-C says how many tiles are
    stored and that the same command resumes, and exits 130."""
    choice(kernel_store.Kind, options.kind, "kind")
    if options.ridge is not None:  # as given, before computing and scaling by tr(K)/N
        nonnegative_real(options.ridge, "ridge")
    console = Console()
    ok = True
    if options.ridge is None or not options.store.exists():
        try:
            ok = compute_store(settings, options, network, console)
        except TilesInterrupted as stop:  # counted again: workers may finish tiles as they close
            fail(
                f"interrupted: {len(done_tiles(options.store))} of {stop.tiles} tiles stored in "
                f"{str(options.store)!r}; run the same command again to resume (stored tiles "
                "are kept, tiles in flight are computed again)",
                status=130,
            )
    if options.ridge is not None and ok:
        ridge_on_store(options, settings.memory_budget, console)
    return ok
