"""Closed-form MSE training of a linearized (or infinitely wide) network.

For the loss ``½‖f(X) − Y‖² / N`` and learning rate η, the linearized network evolves
under its (fixed) NTK Θ as (Jacot et al. 2018; Lee et al. 2019, eq. 9; CONVENTIONS.md)

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

from ntkscope._checks import finite, nonnegative_real, tensor
from ntkscope.metrics import flat_kernel


class MSEPrediction(NamedTuple):
    """Predicted outputs at each requested time: train (T, N, O), test (T, M, O)."""

    train: torch.Tensor
    test: torch.Tensor


def _system(kernel_train, kernel_test_train, y):
    """Kernels as (N·K, N·K), (M·K, N·K) and targets as (N·K, O/K): K = O for a full kernel
    (one system over (example, output) pairs), K = 1 for a scalar kernel (O columns)."""
    if kernel_train.dim() not in (2, 4) or kernel_train.shape[0] != kernel_train.shape[1]:
        raise ValueError(
            f"kernel_train: expected (N, N) or (N, N, O, O), got {tuple(kernel_train.shape)}"
        )
    n = kernel_train.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"y: expected {n} rows like kernel_train, got {tuple(y.shape)}")
    y = y.reshape(n, -1)
    n_out = y.shape[1]
    if kernel_test_train.dim() != kernel_train.dim() or kernel_test_train.shape[1] != n:
        raise ValueError(
            f"kernel_test_train: expected (M, {n}) like kernel_train, got "
            f"{tuple(kernel_test_train.shape)}"
        )
    if kernel_train.dim() == 2:
        return kernel_train, kernel_test_train, y
    for name, kernel in (("kernel_train", kernel_train), ("kernel_test_train", kernel_test_train)):
        if kernel.shape[2:] != (n_out, n_out):
            raise ValueError(f"{name}: expected O×O blocks with O = {n_out} outputs of y")
    return flat_kernel(kernel_train), flat_kernel(kernel_test_train), y.reshape(-1, 1)


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
        lr: learning rate η > 0.
        discrete: gradient descent steps instead of gradient flow.

    Returns:
        `MSEPrediction` with train (T, N, O) and test (T, M, O), float64.
    """
    k, ks, y, f0, f0s = _as_float64(
        kernel_train=kernel_train, kernel_test_train=kernel_test_train, y=y,
        f0_train=f0_train, f0_test=f0_test,
    )  # fmt: skip
    (n, m), n_out = (k.shape[0], ks.shape[0]), y.reshape(k.shape[0], -1).shape[1]
    if f0.numel() != y.numel() or f0s.numel() != m * n_out:
        raise ValueError(f"f0_train, f0_test: expected shapes ({n}, {n_out}) and ({m}, {n_out})")
    k, ks, target = _system(k, ks, y)
    f0, f0s = f0.reshape(target.shape), f0s.reshape(ks.shape[0], target.shape[1])
    rate = nonnegative_real(lr, "lr") / n
    if rate == 0:
        raise ValueError("lr: expected a positive learning rate, got 0")
    times = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if torch.isnan(times).any() or (times < 0).any():
        raise ValueError(f"t: expected times >= 0, got {t!r}")
    eigenvalues, vectors = torch.linalg.eigh((k + k.T) / 2)
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
    k, ks, target = _system(k, ks, y)
    eigenvalues, vectors = torch.linalg.eigh((k + k.T) / 2)
    shifted = eigenvalues + nonnegative_real(ridge, "ridge")
    inverse = torch.where(_nonzero(shifted), 1.0 / shifted, torch.zeros_like(shifted))
    return (ks @ (vectors @ (inverse[:, None] * (vectors.T @ target)))).reshape(m, -1)
