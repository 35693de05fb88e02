"""Closed-form MSE training of a linearized (or infinitely wide) network.

For the loss ``½‖f(X) − Y‖² / N`` and learning rate η, the linearized network evolves
under its (fixed) NTK Θ as (Jacot et al. 2018; Lee et al. 2019, eq. 9; docs/conventions.md)

    f_t(x) = f_0(x) + Θ(x, X) Θ(X, X)⁻¹ (I − exp(−η Θ(X, X) t / N)) (Y − f_0(X))

under gradient flow, and with ``(I − η Θ / N)^t`` in place of the exponential under
discrete gradient descent. With ``Θ = V diag(λ) Vᵀ`` both are
``V diag(g(λ)) Vᵀ``, where g(λ) = (1 − e^{−ηλt/N}) / λ or (1 − (1 − ηλ/N)^t) / λ, whose
λ → 0 limit ηt/N keeps null directions of Θ exact. One eigendecomposition serves every
time; everything is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from ntkscope import metrics
from ntkscope._checks import finite, learning_rate, nonnegative_real, tensor
from ntkscope.metrics import flat_kernel


class MSEPrediction(NamedTuple):
    """Predicted outputs at each requested time: train (T, N, O), test (T, M, O)."""

    train: torch.Tensor
    test: torch.Tensor


SYMMETRY_TOLERANCE = 1e-5
"""Largest accepted ``max|K − Kᵀ| / max|K|`` of a training kernel: float32 eNTKs are
symmetric to rounding (~1e-7 relative); a larger asymmetry means a wrong matrix."""


def _square(kernel: torch.Tensor) -> int:
    """N of a training kernel (N, N) or (N, N, O, O), checked square and symmetric."""
    shape = tuple(kernel.shape)
    if kernel.dim() not in (2, 4) or shape[0] != shape[1] or shape[2:3] != shape[3:]:
        raise ValueError(f"kernel_train: expected (N, N) or (N, N, O, O), got {shape}")
    flat = flat_kernel(kernel) if kernel.dim() == 4 else kernel
    scale = float(flat.abs().max()) or 1.0
    asymmetry = float((flat - flat.T).abs().max()) / scale
    if asymmetry > SYMMETRY_TOLERANCE:
        raise ValueError(
            f"kernel_train: expected a symmetric kernel Θ(X, X), got max|K − Kᵀ| / max|K| = "
            f"{asymmetry:.3g} (tolerance {SYMMETRY_TOLERANCE:g})"
        )
    return shape[0]


def _system(kernel_train, kernel_test_train, y):
    """Kernels as (N·K, N·K), (M·K, N·K), targets as (N·K, O/K), and O: K = O for a full
    kernel (one system over (example, output) pairs), K = 1 for a scalar kernel (O columns)."""
    n = _square(kernel_train)
    if y.dim() not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y: expected ({n},) or ({n}, O) like kernel_train, got {tuple(y.shape)}")
    y = y.reshape(n, -1)
    n_out = y.shape[1]
    full = kernel_train.dim() == 4
    if full and kernel_train.shape[2] != n_out:
        raise ValueError(
            f"y: expected ({n}, {kernel_train.shape[2]}), one target per output of the full "
            f"kernel_train {tuple(kernel_train.shape)}, got {tuple(y.shape)}"
        )
    expected = (n, n_out, n_out) if full else (n,)
    if kernel_test_train.dim() != kernel_train.dim() or kernel_test_train.shape[1:] != expected:
        raise ValueError(
            f"kernel_test_train: expected (M, {', '.join(map(str, expected))}), got "
            f"{tuple(kernel_test_train.shape)}"
        )
    if not full:
        return kernel_train, kernel_test_train, y, n_out
    return flat_kernel(kernel_train), flat_kernel(kernel_test_train), y.reshape(-1, 1), n_out


def stability_limit(kernel_train: torch.Tensor) -> float:
    """``2N / λ_max``: gradient descent on ``½‖f(X) − Y‖² / N`` with the (fixed) kernel
    ``kernel_train`` (N, N) or (N, N, O, O) converges for learning rates below it and
    diverges above, since each step multiplies the residual by ``I − ηΘ/N``."""
    return 2 * len(kernel_train) / metrics.largest_eigenvalue(kernel_train)


def _rate(lr: float, n: int, eigenvalues: torch.Tensor, discrete: bool) -> float:
    """η / N; for gradient descent it must be below 2/λ_max (`stability_limit`)."""
    rate = learning_rate(lr) / n
    top = float(eigenvalues[-1])
    if discrete and rate * top >= 2:
        raise ValueError(
            f"lr: gradient descent diverges for lr >= 2N/λ_max = {2 * n / top:.6g} "
            f"(stability_limit); got {lr:g}"
        )
    return rate


def _as_float64(**tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in float64, each checked to be a finite tensor (errors name it)."""
    return [finite(tensor(v, name).to(torch.float64), name) for name, v in tensors.items()]


def _nonzero(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Which eigenvalues exceed rounding (N · eps · max|λ|, as numpy.linalg.pinv)."""
    tol = eigenvalues.abs().max() * len(eigenvalues) * torch.finfo(torch.float64).eps
    return eigenvalues.abs() > tol


def _gain(eigenvalues, nonzero, times, rate: float, discrete: bool) -> torch.Tensor:
    """g(λ) at every time, (T, N): (1 − decay)/λ, its limit ηt/N at λ = 0, and at t = ∞
    the pseudo-inverse 1/λ (0 on the null space, where Θ(·, X) vanishes anyway)."""
    lam, t = eigenvalues[None, :], times[:, None]
    decay = (1.0 - rate * lam) ** t if discrete else torch.exp(-rate * lam * t)
    safe = torch.where(nonzero, eigenvalues, torch.ones_like(eigenvalues))[None, :]
    finite = torch.where(nonzero[None, :], (1.0 - decay) / safe, rate * t)
    limit = torch.where(nonzero, 1.0 / safe[0], torch.zeros_like(safe[0]))[None, :]
    return torch.where(torch.isinf(t), limit, finite)


def predict_mse(
    kernel_train: torch.Tensor,
    kernel_test_train: torch.Tensor,
    y: torch.Tensor,
    f0_train: torch.Tensor,
    f0_test: torch.Tensor,
    t: float | Sequence[float] | torch.Tensor,
    lr: float,
    discrete: bool = False,
) -> MSEPrediction:
    """Outputs of NTK-governed MSE training at times ``t`` (module docstring formula).

    Args:
        kernel_train: Θ(X, X), (N, N) scalar kernel or (N, N, O, O) full kernel.
        kernel_test_train: Θ(X*, X), (M, N) or (M, N, O, O).
        y: targets Y, (N,) or (N, O).
        f0_train, f0_test: outputs at initialization f_0(X) (N, O) and f_0(X*) (M, O).
        t: one time or several (steps when ``discrete``); ``math.inf`` gives the limit.
        lr: learning rate η > 0; with ``discrete``, below the stability limit 2N/λ_max(Θ).
        discrete: gradient descent steps instead of gradient flow.

    Raises:
        ValueError: naming the argument, for shapes that do not match, a kernel_train that
            is not symmetric to `SYMMETRY_TOLERANCE`, or an unstable ``lr`` with ``discrete``.

    Returns:
        `MSEPrediction` with train (T, N, O) and test (T, M, O), float64.
    """
    k, ks, y, f0, f0s = _as_float64(
        kernel_train=kernel_train, kernel_test_train=kernel_test_train, y=y,
        f0_train=f0_train, f0_test=f0_test,
    )  # fmt: skip
    (n, m) = (k.shape[0], ks.shape[0])
    k, ks, target, n_out = _system(k, ks, y)
    for name, value, rows in (("f0_train", f0, n), ("f0_test", f0s, m)):
        if value.numel() != rows * n_out or value.shape[0] != rows:
            raise ValueError(f"{name}: expected ({rows}, {n_out}), got {tuple(value.shape)}")
    f0, f0s = f0.reshape(target.shape), f0s.reshape(ks.shape[0], target.shape[1])
    eigenvalues, vectors = torch.linalg.eigh((k + k.T) / 2)
    rate = _rate(lr, n, eigenvalues, discrete)
    times = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if torch.isnan(times).any() or (times < 0).any():
        raise ValueError(f"t: expected times >= 0, got {t!r}")
    gain = _gain(eigenvalues, _nonzero(eigenvalues), times, rate, discrete)  # (T, N·K)
    # Θ⁻¹(I − e^{−ηΘt/N})(Y − f0) for every time, in the eigenbasis of Θ
    weights = vectors @ (gain[:, :, None] * (vectors.T @ (target - f0)))
    train, test = f0 + k @ weights, f0s + ks @ weights
    return MSEPrediction(train.reshape(len(times), n, n_out), test.reshape(len(times), m, n_out))


def kernel_regression(
    kernel_train: torch.Tensor,
    kernel_test_train: torch.Tensor,
    y: torch.Tensor,
    ridge: float = 0.0,
) -> torch.Tensor:
    """Kernel (ridge) regression ``Θ(X*, X) (Θ(X, X) + ridge·I)⁻¹ Y`` in float64: (M, O).

    The t → ∞ limit of `predict_mse` with f_0 = 0 when ridge = 0 (pseudo-inverse on the
    null space of Θ). Kernels as in `predict_mse`.
    """
    k, ks, y = _as_float64(kernel_train=kernel_train, kernel_test_train=kernel_test_train, y=y)
    m = ks.shape[0]
    k, ks, target, _ = _system(k, ks, y)
    eigenvalues, vectors = torch.linalg.eigh((k + k.T) / 2)
    shifted = eigenvalues + nonnegative_real(ridge, "ridge")
    inverse = torch.where(_nonzero(shifted), 1.0 / shifted, torch.zeros_like(shifted))
    return (ks @ (vectors @ (inverse[:, None] * (vectors.T @ target)))).reshape(m, -1)
