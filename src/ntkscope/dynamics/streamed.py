"""Kernel ridge and the top of the spectrum from kernel-matrix products alone.

For kernels that do not fit in memory (`ntkscope.kernel_store` streams the products from
the chunks of a stored kernel): both methods touch K only through ``matmat(V) = K V``.

- `cg_ridge`: blocked preconditioned conjugate gradients (Hestenes & Stiefel 1952) for
  (K + λ I) α = Y, all O target columns advanced together so that each iteration costs one
  pass over K. The preconditioner is the randomized Nyström preconditioner of rank ℓ
  (Frangella, Tropp & Udell 2023, "Randomized Nyström preconditioning", SIAM J. Matrix
  Anal. Appl. 44(2)): one pass K Ω with ℓ orthonormal Gaussian columns gives
  K ≈ U Λ̂ Uᵀ, and P⁻¹ = (λ̂_ℓ + λ) U (Λ̂ + λ I)⁻¹ Uᵀ + (I − U Uᵀ). A kernel's spectrum
  is dominated by a few large eigenvalues (the constant mode grows like N), which P
  removes: CG then needs about √((λ_ℓ+1 + λ)/λ) passes, not √(λ_1/λ). With ℓ = 0, the
  Jacobi preconditioner diag(K) + λ. It stops when every column satisfies
  ‖Y − (K + λ I) α‖₂ ≤ tol · ‖Y‖₂, so that ‖α − α*‖ / ‖α*‖ ≤ κ(K + λ I) · tol (κ: the
  condition number). The residual is then recomputed from one more product, and CG
  restarted from it if the recurrence's residual had drifted below the true one.
- `top_eigenvalues`: the largest eigenvalues by implicitly restarted Lanczos
  (``scipy.sparse.linalg.eigsh``, ARPACK; Lehoucq, Sorensen & Yang 1998), to relative
  accuracy ``tol``.

Products are in float64, whatever the stored dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from ntkscope._checks import columns, nonnegative_int, nonnegative_real, positive_int, positive_real

MatMat = Callable[[np.ndarray], np.ndarray]
"""``matmat(V)``: K V for V of shape (N, m), float64 in and out."""


@dataclass(frozen=True)
class CGSolution:
    """Weights α (N, O), iterations (passes over K, residual checks included), and the
    largest relative residual ‖Y − (K + λ I) α‖₂ / ‖Y‖₂ over the columns (recomputed)."""

    weights: torch.Tensor
    iterations: int
    relative_residual: float


def _product(matmat: MatMat, v: torch.Tensor, ridge: float) -> torch.Tensor:
    return torch.from_numpy(np.asarray(matmat(v.numpy()), dtype=np.float64)) + ridge * v


Preconditioner = Callable[[torch.Tensor], torch.Tensor]
"""r ↦ P⁻¹ r for r (N, O)."""


def jacobi(diagonal: torch.Tensor, ridge: float) -> Preconditioner:
    """P = diag(K) + λ I."""
    d = diagonal + ridge
    return lambda r: r / d[:, None]


def nystrom(matmat: MatMat, n: int, rank: int, ridge: float, seed: int = 0) -> Preconditioner:
    """The randomized Nyström preconditioner of rank ``rank`` (module docstring; Frangella,
    Tropp & Udell 2023, Algorithm 2.1 with the stabilizing shift ν, and Eq. 5.3). One call
    of ``matmat`` with ``rank`` columns; the shift is raised tenfold (up to 1e-6 ‖Y‖_F)
    while the small Cholesky fails, as a float32 kernel's rounding can make K Ω indefinite
    at float64's ε. Requires λ > 0."""
    generator = torch.Generator().manual_seed(seed)
    omega = torch.linalg.qr(torch.randn(n, rank, generator=generator, dtype=torch.float64))[0]
    y = torch.from_numpy(np.asarray(matmat(omega.numpy()), dtype=np.float64))
    norm = float(torch.linalg.matrix_norm(y))
    shift = float(np.finfo(np.float64).eps) * norm
    while True:
        shifted = y + shift * omega
        factor, info = torch.linalg.cholesky_ex(omega.T @ shifted)
        if int(info) == 0 or shift > 1e-6 * norm:
            break
        shift *= 10
    if int(info) != 0:
        raise ValueError("matmat: K Ω is not positive semi-definite; K is not a kernel matrix")
    b = torch.linalg.solve_triangular(factor, shifted.T, upper=False).T
    u, sigma, _ = torch.linalg.svd(b, full_matrices=False)
    eigenvalues = (sigma**2 - shift).clamp_min(0)
    weights = (eigenvalues[-1] + ridge) / (eigenvalues + ridge) - 1

    def apply(r: torch.Tensor) -> torch.Tensor:
        return r + u @ (weights[:, None] * (u.T @ r))

    return apply


def cg_ridge(
    matmat: MatMat,
    diagonal: torch.Tensor,
    y: torch.Tensor,
    ridge: float,
    *,
    tol: float = 1e-8,
    max_iter: int | None = None,
    rank: int = 256,
) -> CGSolution:
    """α = (K + λ I)⁻¹ Y by blocked preconditioned CG (module docstring).

    Args:
        matmat: K V for V (N, m) (float64 NumPy arrays).
        diagonal: diag(K), (N,).
        y: targets (N,) or (N, O).
        ridge: λ ≥ 0 (K + λ I must be positive definite).
        tol: relative residual at which a column stops.
        max_iter: passes over K at most; default 2 N.
        rank: ℓ of the Nyström preconditioner (its sketch is one more pass, with ℓ
            columns; at most N − 1); 0, or λ = 0: the Jacobi preconditioner.

    Raises:
        ValueError: naming the argument; also when CG does not reach ``tol`` (K + λ I
            singular or too ill-conditioned: raise ``ridge``).
    """
    d = torch.as_tensor(diagonal, dtype=torch.float64).reshape(-1)
    n = len(d)
    y = columns(y, n, "y")
    ridge, tol = nonnegative_real(ridge, "ridge"), positive_real(tol, "tol")
    max_iter = 2 * n if max_iter is None else positive_int(max_iter, "max_iter")
    if not bool((d + ridge > 0).all()):
        raise ValueError("ridge: diag(K) + λ has entries ≤ 0; K is not positive definite")
    rank = min(nonnegative_int(rank, "rank"), n - 1)
    if rank > 0 and ridge > 0:
        preconditioner, passes = nystrom(matmat, n, rank, ridge), 1
    else:
        preconditioner, passes = jacobi(d, ridge), 0
    goal = tol * torch.linalg.vector_norm(y, dim=0)
    x, r = torch.zeros_like(y), y.clone()
    while True:  # CG, restarted from the true residual when the recurrence's has drifted
        relative = float((torch.linalg.vector_norm(r, dim=0) / goal.clamp_min(1e-300)).max())
        if bool((torch.linalg.vector_norm(r, dim=0) <= goal).all()):
            return CGSolution(x, passes, relative * tol)
        if passes >= max_iter or not bool(torch.isfinite(r).all()):
            raise ValueError(
                f"ridge: CG reached a relative residual of {relative * tol:.2e} > tol = "
                f"{tol:.1e} in {passes} passes; K + λ I is singular or ill-conditioned, "
                "raise the ridge"
            )
        x, used = _conjugate_gradients(matmat, preconditioner, x, r, ridge, goal, max_iter - passes)
        r = y - _product(matmat, x, ridge)
        passes += used + 1


def _conjugate_gradients(matmat, preconditioner, x, r, ridge, goal, budget):
    """Preconditioned CG from (x, r = Y − A x) until every column's recurrence residual is
    within ``goal`` or ``budget`` passes are spent: (x, passes)."""
    z = preconditioner(r)
    p, rz = z.clone(), (r * z).sum(0)
    for passes in range(1, budget + 1):
        q = _product(matmat, p, ridge)
        active = torch.linalg.vector_norm(r, dim=0) > goal
        a = torch.where(active, rz / torch.where(active, (p * q).sum(0), 1.0), 0.0)
        x, r = x + a * p, r - a * q
        if bool((torch.linalg.vector_norm(r, dim=0) <= goal).all()):
            return x, passes
        z = preconditioner(r)
        rz_next = (r * z).sum(0)
        p = z + torch.where(active, rz_next / torch.where(active, rz, 1.0), 0.0) * p
        rz = rz_next
    return x, budget


def top_eigenvalues(matmat: MatMat, n: int, k: int = 10, *, tol: float = 1e-8) -> np.ndarray:
    """The ``k`` largest eigenvalues of the symmetric N×N matrix K, in decreasing order.

    Args:
        matmat: K V for V (N, m).
        n: N.
        k: how many, 1 ≤ k < N.
        tol: relative accuracy of each eigenvalue (ARPACK's stopping rule).
    """
    n, k = positive_int(n, "n"), positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k: Lanczos finds fewer than N = {n} eigenvalues, got k = {k}")

    def matvec(v: np.ndarray) -> np.ndarray:
        return np.asarray(matmat(v.reshape(n, 1)), dtype=np.float64).reshape(n)

    op = LinearOperator((n, n), matvec=matvec, matmat=matmat, dtype=np.float64)
    values = eigsh(op, k=k, which="LA", tol=positive_real(tol, "tol"), return_eigenvectors=False)
    return np.sort(values)[::-1]
