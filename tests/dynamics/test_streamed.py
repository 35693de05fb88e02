"""CG ridge and Lanczos from products alone, against dense float64 solutions."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkscope.dynamics.streamed import cg_ridge, top_eigenvalues


def spd(n: int, seed: int, condition: float) -> np.ndarray:
    """A symmetric positive definite matrix with eigenvalues from 1 to ``condition``."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return (q * np.geomspace(1, condition, n)) @ q.T


@given(n=st.integers(2, 40), columns=st.integers(1, 3), seed=st.integers(0, 99))
def test_cg_matches_the_dense_solve_within_condition_times_tol(n, columns, seed):
    k = spd(n, seed, 1e3)
    y = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((n, columns)))
    y[:, 0] = 0 if columns > 1 else y[:, 0]  # a zero column converges at once
    tol, ridge = 1e-10, 0.5
    solution = cg_ridge(lambda v: k @ v, torch.from_numpy(np.diag(k).copy()), y, ridge, tol=tol)
    shifted = torch.from_numpy(k + ridge * np.eye(n))
    exact = torch.linalg.solve(shifted, y)
    condition = float(torch.linalg.cond(shifted))
    # ‖α − α*‖ ≤ κ · tol · ‖α*‖ per column (the module docstring's bound), 10× for rounding
    error = torch.linalg.vector_norm(solution.weights - exact, dim=0)
    assert (error <= 10 * condition * tol * torch.linalg.vector_norm(exact, dim=0) + 1e-300).all()
    assert solution.relative_residual <= 10 * tol and solution.iterations <= 2 * n + 2


def test_cg_refuses_what_it_cannot_solve():
    k = np.diag([1.0, 0.0])
    with pytest.raises(ValueError, match="ridge: diag"):
        cg_ridge(lambda v: k @ v, torch.tensor([1.0, 0.0]), torch.ones(2), 0.0)
    singular = np.ones((2, 2))  # Y outside its range: no solution at λ = 0
    with pytest.raises(ValueError, match="ridge: CG reached a relative residual"):
        cg_ridge(lambda v: singular @ v, torch.ones(2), torch.tensor([1.0, -1.0]), 0.0)
    with pytest.raises(ValueError, match="y: expected"):
        cg_ridge(lambda v: v, torch.ones(3), torch.ones(4), 0.0)


def test_lanczos_finds_the_top_eigenvalues():
    k = spd(50, 0, 1e4)
    expected = np.geomspace(1, 1e4, 50)[::-1][:5]
    # ARPACK's relative accuracy tol = 1e-12 per eigenvalue
    np.testing.assert_allclose(top_eigenvalues(lambda v: k @ v, 50, 5, tol=1e-12), expected,
                               rtol=1e-10)  # fmt: skip


def test_the_nystrom_preconditioner_removes_a_kernels_dominant_modes():
    # A Gaussian kernel plus a constant: one eigenvalue ≈ N/2 over a decaying rest, the
    # shape of an NTK's spectrum. Jacobi CG needs about √(λ_1/λ) passes; the rank-64
    # Nyström preconditioner leaves √((λ_65 + λ)/λ). Passes measured: 216 and 71.
    x = np.random.default_rng(0).standard_normal((400, 8))
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 16) + 0.5
    y, d = torch.ones(400, 1, dtype=torch.float64), torch.from_numpy(np.diag(k).copy())
    shifted = torch.from_numpy(k) + 1e-2 * torch.eye(400, dtype=torch.float64)
    exact, condition = torch.linalg.solve(shifted, y), float(torch.linalg.cond(shifted))
    passes = {}
    for rank in (0, 64):
        solution = cg_ridge(lambda v: k @ v, d, y, 1e-2, tol=1e-10, rank=rank)
        passes[rank] = solution.iterations
        # ‖α − α*‖ ≤ κ · tol · ‖α*‖ (the module docstring's bound)
        error = torch.linalg.norm(solution.weights - exact) / torch.linalg.norm(exact)
        assert error <= condition * 1e-10
    assert passes[64] <= passes[0] / 2, passes
