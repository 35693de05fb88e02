"""Kernel ridge regression with a scalar kernel, one factorization reused (float64).

Predictions ``K(X*, X) (K(X, X) + λ I)⁻¹ Y`` for a scalar kernel (the trace eNTK, the infinite
NTK or NNGP, an after-kernel; Vyas, Bansal & Nakkiran 2022 use exactly this to compare a
network with its kernels). The systems are never inverted:

- one ridge λ: a Cholesky factorization of ``K + λ I`` (float64), cached per λ and reused for
  every target column and every test kernel; λ = 0 on a singular kernel (ridgeless
  interpolation of a rank-deficient K) falls back to the eigendecomposition below, with the
  pseudo-inverse on K's null space, which is the t → ∞ limit of gradient flow from f_0 = 0
  (`ntkscope.predict_mse`).
- a grid of ridges (`KernelRidge.path`, `select_ridge`): one cached Cholesky per ridge for
  grids of fewer than `EIGH_GRID` ridges; for larger grids one eigendecomposition
  ``K = V diag(s) Vᵀ`` serves them all, ``α_λ = V diag(1/(s + λ)) Vᵀ Y``.

Cost: N³/3 flops for a Cholesky, O(N² O) per solve; memory a few N × N float64 matrices
(n = 5,000: 200 MB each). The eigendecomposition is far dearer than its flop count
suggests: at n = 5,000 on 2 CPU cores one `eigh` took as long as about 16 Cholesky solves
(`benchmarks/kernel_ridge.py`: 8 ridges by Cholesky 0.70×, by one eigh 1.45× the time of
a `torch.linalg.solve` per ridge), hence `EIGH_GRID`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ntkscope._checks import columns, columns_like, finite_float64, nonnegative_real

EIGH_GRID = 16
"""Grids of this many ridges or more share one eigendecomposition (module docstring)."""

DEFAULT_RIDGES = tuple(10.0**k for k in range(-6, 2))
"""Default grid of `select_ridge`, relative to the mean eigenvalue tr(K)/N (plus λ = 0)."""


def _matrix(value: object, argument: str, rows: int | None = None) -> torch.Tensor:
    x = finite_float64(value, argument)
    if x.dim() != 2 or (rows is not None and x.shape[1] != rows):
        expected = "(N, N)" if rows is None else f"(M, {rows})"
        raise ValueError(f"{argument}: expected a matrix {expected}, got {tuple(x.shape)}")
    return x


class KernelRidge:
    """Kernel ridge regression on a fixed training kernel and targets.

    Args:
        kernel_train: scalar kernel K(X, X), (N, N), symmetric positive semi-definite.
        y: targets (N,) or (N, O); all columns share each factorization.

    Raises:
        ValueError, TypeError: naming ``kernel_train`` or ``y`` (shape, non-finite values).
    """

    def __init__(self, kernel_train: torch.Tensor, y: torch.Tensor) -> None:
        k = _matrix(kernel_train, "kernel_train")
        if k.shape[0] != k.shape[1]:
            raise ValueError(f"kernel_train: expected a square (N, N) kernel, got {tuple(k.shape)}")
        self.kernel = (k + k.T) / 2
        self.y = columns(y, k.shape[0], "y")
        self.scale = float(self.kernel.diagonal().mean())
        """tr(K)/N, the mean eigenvalue: the natural unit of a ridge."""
        self._weights: dict[float, torch.Tensor] = {}
        self._eigen: tuple[torch.Tensor, torch.Tensor] | None = None

    def _eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._eigen is None:
            self._eigen = torch.linalg.eigh(self.kernel)
        return self._eigen

    def _spectral_weights(self, ridges: torch.Tensor) -> torch.Tensor:
        """α for every ridge from one eigendecomposition: (R, N, O); pseudo-inverse at 0."""
        s, v = self._eigh()
        shifted = s[None, :] + ridges[:, None]
        tol = s.abs().max() * len(s) * torch.finfo(torch.float64).eps
        inverse = torch.where(shifted > tol, 1.0 / shifted, torch.zeros_like(shifted))
        return torch.einsum("nk,rk,ko->rno", v, inverse, v.T @ self.y)

    def weights(self, ridge: float = 0.0) -> torch.Tensor:
        """α = (K + λ I)⁻¹ Y, (N, O), by a cached Cholesky solve (see the module docstring)."""
        ridge = nonnegative_real(ridge, "ridge")
        if ridge not in self._weights:
            shifted = self.kernel + ridge * torch.eye(len(self.kernel), dtype=torch.float64)
            factor, info = torch.linalg.cholesky_ex(shifted)
            if int(info) == 0:
                alpha = torch.cholesky_solve(self.y, factor)
            else:  # singular to rounding: pseudo-inverse of the PSD part
                alpha = self._spectral_weights(torch.tensor([ridge], dtype=torch.float64))[0]
            self._weights[ridge] = alpha
        return self._weights[ridge]

    def predict(self, kernel_test_train: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
        """``K(X*, X) (K + λ I)⁻¹ Y``: (M, O) predictions for the rows of ``kernel_test_train``."""
        ks = _matrix(kernel_test_train, "kernel_test_train", rows=len(self.kernel))
        return ks @ self.weights(ridge)

    def path(self, kernel_test_train: torch.Tensor, ridges: Sequence[float]) -> torch.Tensor:
        """Predictions for every ridge, (R, M, O): a cached Cholesky per ridge, or one
        eigendecomposition for grids of `EIGH_GRID` ridges or more."""
        ks = _matrix(kernel_test_train, "kernel_test_train", rows=len(self.kernel))
        grid = [nonnegative_real(r, "ridges") for r in ridges]
        if not grid:
            raise ValueError("ridges: expected at least one ridge value")
        if len(grid) < EIGH_GRID:
            return torch.stack([ks @ self.weights(r) for r in grid])
        return ks @ self._spectral_weights(torch.tensor(grid, dtype=torch.float64))


def select_ridge(
    model: KernelRidge,
    kernel_val_train: torch.Tensor,
    y_val: torch.Tensor,
    relative_ridges: Sequence[float] = DEFAULT_RIDGES,
) -> tuple[float, torch.Tensor]:
    """The ridge with the lowest validation MSE among 0 and ``relative_ridges`` × tr(K)/N.

    Args:
        model: the fitted `KernelRidge`.
        kernel_val_train: K(X_val, X), (M, N).
        y_val: validation targets (M,) or (M, O) like the training targets.
        relative_ridges: positive multiples of the mean eigenvalue tr(K)/N to try.

    Returns:
        (ridge, validation MSE per candidate): the chosen absolute ridge, and the
        mean squared errors (R + 1,) for λ = 0 followed by the grid.
    """
    if any(nonnegative_real(r, "relative_ridges") <= 0 for r in relative_ridges):
        raise ValueError("relative_ridges: expected positive values (λ = 0 is always tried)")
    candidates = [0.0] + [r * model.scale for r in relative_ridges]
    predictions = model.path(kernel_val_train, candidates)
    y_val = columns_like(y_val, predictions[0], "y_val")
    errors = (predictions - y_val).square().mean(dim=(1, 2))
    return candidates[int(errors.argmin())], errors
