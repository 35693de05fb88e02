"""Kernels larger than one machine: tiles on any Dask cluster, a zarr store that survives a kill.

``compute`` writes an N1×N2 kernel (the empirical NTK of any model, or the infinite-width
NNGP and NTK) tile by tile into a zarr store, chunk = tile, through the generic tiled job
of `ntkscope.runner.tiled`; `ntkscope.kernels` supplies the tiles. A killed job started
again with the same arguments computes only the tiles whose chunks are not complete.
``open`` gives the stored kernel as a lazy ``dask.array`` with its metadata; on it,
``ridge`` fits kernel ridge regression (a Cholesky factorization in memory when it fits
the memory budget, streamed conjugate gradients otherwise) and ``eigenvalues`` gives the
top of the spectrum by Lanczos, both from products that stream the chunks.

This module composes the runner (tiled jobs) and the kernels, so it sits above both;
the runner knows nothing of NTKs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import zarr

from ntkscope._checks import nonnegative_real, positive_int
from ntkscope.dynamics.ridge import KernelRidge
from ntkscope.dynamics.streamed import cg_ridge, top_eigenvalues
from ntkscope.kernels import Method, Mode
from ntkscope.kernels._job import Kind, ModelLike, kernel_job
from ntkscope.kernels._tiling import resolve_budget
from ntkscope.runner.tiled import JobReport, Layout, Progress, done_tiles, lazy, read_job, run_job

TARGETS = "targets"
"""Array of a store holding the targets of its rows, when `compute` was given them."""

CHOLESKY_COPIES = 3
"""N×N float64 matrices the in-memory ridge holds at once (kernel, shifted kernel, factor)."""


def compute(
    kind: str | Kind,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    store: str | Path,
    model: ModelLike | None = None,
    mode: str | Mode = Mode.TRACE,
    method: str | Method = Method.AUTO,
    memory_budget: int | float | str | None = None,
    targets: torch.Tensor | None = None,
    client: Any | None = None,
    progress: Progress | None = None,
    **kernel_args: Any,
) -> JobReport:
    """Compute a kernel into the zarr store ``store``, skipping the tiles it already holds.

    Args:
        kind: "entk", "infinite" or "infinite_cnn" (`ntkscope.kernels._job.Kind`): the
            empirical NTK of ``model`` (array ``kernel``), or the NNGP and NTK of
            `infinite_kernels` / `infinite_cnn_kernels` (arrays ``nngp`` and ``ntk``).
        x1: inputs (N1, ...), as the in-memory function takes them.
        x2: inputs (N2, ...), or None for x2 = x1: only the upper triangle of tiles runs.
        store: path of the store (its parent directory must exist). An existing store
            must hold the same job (kind, mode, method, dtype, model and data hashes,
            kernel arguments); otherwise it is refused, naming what differs.
        model: for "entk", an ``nn.Module`` or a picklable function returning it (built
            once per worker, where it must build the same weights).
        mode, method: of `empirical_ntk` (the method is resolved once, here).
        memory_budget: working memory of one worker, which sets the tile size as for the
            in-memory functions (default a quarter of free RAM). Tiles are those of the
            in-memory function, so the store holds exactly its bytes.
        targets: optional (N1, ...) targets stored beside the kernel (`StoredKernel.targets`).
        client: a ``dask.distributed.Client``: tiles run on its workers, which must see
            ``store`` (a shared file system); None: in this process.
        progress: counts tiles (e.g. `ntkscope.runner.progress.SweepProgress`).
        **kernel_args: for the infinite kinds, the keyword arguments of
            `infinite_kernels` / `infinite_cnn_kernels` (``depth``, ``activation``, ...).

    Returns:
        The job's report: tiles in all, already stored, computed now, and the failed ones
        with their indices and errors (the other tiles are computed all the same).

    Raises:
        ValueError, TypeError: naming the offending argument.
        ntkscope.runner.tiled.TilesInterrupted: on Ctrl-C (a KeyboardInterrupt), with the
            tiles stored so far; the same call again resumes.
    """
    job = kernel_job(kind, x1, x2, model, mode, method, memory_budget, kernel_args)
    if targets is not None and len(targets) != job.shape[0]:
        raise ValueError(f"targets: expected {job.shape[0]} rows (one per x1), got {len(targets)}")
    layout = Layout(job.names, job.shape, job.tile, job.dtype, job.trailing, job.symmetric)
    report = run_job(job.source, store, layout, job.identity, client=client, progress=progress)
    if targets is not None:
        y = torch.as_tensor(targets).detach().cpu().numpy()
        zarr.open_group(store, mode="r+").create_array(TARGETS, data=y, overwrite=True)
    return report


@dataclass(frozen=True)
class RidgeFit:
    """Kernel ridge regression on a stored kernel.

    weights: α (n_train, O); predictions: K(X*, X) α for the rows after the training
    rows, (M, O); solver: "cholesky" or "cg"; iterations: CG passes over K (0 for
    Cholesky); relative_residual: ‖Y − (K + λ I) α‖₂ / ‖Y‖₂ (largest over columns).
    """

    weights: torch.Tensor
    predictions: torch.Tensor
    solver: str
    iterations: int
    relative_residual: float


@dataclass(frozen=True)
class StoredKernel:
    """A kernel store, opened: lazy arrays (chunk = tile) and what they were computed from.

    Attributes:
        path: the store.
        arrays: name -> ``dask.array`` of the full kernel (symmetric ones mirrored).
        identity: kind, mode, method, dtype, model and data hashes, arguments.
        layout: the arrays' shape, tiles and dtype.
        targets: the targets stored with the kernel, or None.
    """

    path: Path
    arrays: dict[str, Any]
    identity: dict[str, str]
    layout: Layout
    targets: np.ndarray | None

    @property
    def kernel(self) -> Any:
        """The eNTK (``kernel``) or, for the infinite kinds, the NTK (``ntk``)."""
        return self.arrays.get("kernel", self.arrays.get("ntk"))

    def _scalar(self, array: str | None) -> Any:
        k = self.kernel if array is None else self.arrays.get(array)
        if k is None:
            raise ValueError(f"array: the store holds {sorted(self.arrays)}, not {array!r}")
        if k.ndim != 2 or k.shape[0] != k.shape[1]:
            raise ValueError(
                f"store: ridge and eigenvalues need a square scalar kernel, got {k.shape} "
                "(compute it with mode='trace' and x2=None)"
            )
        return k

    def diagonal(self, array: str | None = None) -> np.ndarray:
        """diag(K) of the scalar kernel ``array`` (default `kernel`), float64 (N,)."""
        return np.asarray(da.diagonal(self._scalar(array)).compute(), dtype=np.float64)

    def eigenvalues(self, k: int = 10, *, array: str | None = None, tol: float = 1e-8):
        """The ``k`` largest eigenvalues (float64, decreasing), by Lanczos on streamed
        products (`ntkscope.dynamics.streamed.top_eigenvalues`)."""
        kernel = self._scalar(array)
        return top_eigenvalues(_matmat(kernel), kernel.shape[0], k, tol=tol)

    def ridge(
        self,
        n_train: int,
        ridge: float,
        *,
        targets: Any | None = None,
        array: str | None = None,
        memory_budget: int | float | str | None = None,
        tol: float = 1e-8,
    ) -> RidgeFit:
        """Fit on the first ``n_train`` rows, predict the others: (K + λ I) α = Y.

        In memory by `KernelRidge` (Cholesky, float64) when ``3 · 8 · n_train²`` bytes fit
        the memory budget (default a quarter of free RAM); otherwise blocked Jacobi-
        preconditioned CG (`ntkscope.dynamics.streamed.cg_ridge`), each pass streaming the
        chunks, to relative residual ``tol`` (so ‖α − α*‖/‖α*‖ ≤ κ(K + λI) · tol). With a
        ``dask.distributed`` client in this process, the products run on its workers.

        Args:
            n_train: training rows, 1 ≤ n_train ≤ N.
            ridge: λ ≥ 0, absolute.
            targets: (N,) or (N, O); default the stored targets (class labels one-hot).
            array: which array ("nngp", "ntk", "kernel"); default `kernel`.
            memory_budget: bytes or a string such as "2GB".
            tol: CG's relative residual.
        """
        kernel = self._scalar(array)
        n = kernel.shape[0]
        n_train = positive_int(n_train, "n_train")
        if n_train > n:
            raise ValueError(f"n_train: the kernel has {n} rows, got {n_train}")
        y = targets_matrix(self.targets if targets is None else targets, n)[:n_train]
        ridge = nonnegative_real(ridge, "ridge")
        train, rest = kernel[:n_train, :n_train], kernel[n_train:, :n_train]
        if CHOLESKY_COPIES * 8 * n_train**2 <= resolve_budget(memory_budget, torch.device("cpu")):
            model = KernelRidge(torch.from_numpy(train.compute()), y)
            alpha = model.weights(ridge)
            solution = (alpha, "cholesky", 0, _relative_residual(model.kernel, alpha, y, ridge))
        else:
            diagonal = torch.from_numpy(self.diagonal(array)[:n_train])
            cg = cg_ridge(_matmat(train), diagonal, y, ridge, tol=tol)
            solution = (cg.weights, "cg", cg.iterations, cg.relative_residual)
        predictions = torch.from_numpy(_matmat(rest)(solution[0].numpy()))
        return RidgeFit(solution[0], predictions, *solution[1:])


def _matmat(kernel: Any):
    """V ↦ K V in float64, streaming the chunks of the lazy kernel."""

    def product(v: np.ndarray) -> np.ndarray:
        return np.asarray((kernel.astype(np.float64) @ v).compute(), dtype=np.float64)

    return product


def _relative_residual(k: torch.Tensor, alpha: torch.Tensor, y: torch.Tensor, ridge: float):
    residual = torch.linalg.vector_norm(y - k @ alpha - ridge * alpha, dim=0)
    return float((residual / torch.linalg.vector_norm(y, dim=0).clamp_min(1e-300)).max())


def targets_matrix(targets: Any, n: int) -> torch.Tensor:
    """(N, O) float64 targets; integer class labels become one-hot rows."""
    if targets is None:
        raise ValueError("targets: the store has none; pass targets=")
    y = torch.as_tensor(np.asarray(targets))
    if len(y) != n:
        raise ValueError(f"targets: expected {n} rows, got {len(y)}")
    if not y.is_floating_point():
        y = torch.nn.functional.one_hot(y.long().reshape(-1))
    return y.to(torch.float64).reshape(n, -1)


def open(store: str | Path, *, partial: bool = False) -> StoredKernel:
    """The kernel in ``store`` as lazy arrays with its metadata.

    Args:
        store: a store written by `compute`.
        partial: allow a store with missing tiles (they read as zeros).

    Raises:
        ValueError: naming ``store`` when it is not a kernel store or tiles are missing.
    """
    path = Path(store)
    if not path.exists():
        raise ValueError(f"store: no such store {str(path)!r}")
    job = read_job(path)
    layout = Layout.from_json(job["layout"])
    missing = len(layout.tiles()) - len(done_tiles(path))
    if missing and not partial:
        raise ValueError(
            f"store: {str(path)!r} lacks {missing} of {len(layout.tiles())} tiles; run the "
            "same job again to complete it (or open it with partial=True)"
        )
    group = zarr.open_group(path, mode="r")
    targets = group[TARGETS][...] if TARGETS in list(group.array_keys()) else None
    arrays = {name: lazy(path, name) for name in layout.names}
    return StoredKernel(path, arrays, dict(job["identity"]), layout, targets)
