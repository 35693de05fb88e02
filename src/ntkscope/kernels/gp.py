"""Gaussian-process regression with a scalar (NTK) kernel, hyperparameters by evidence.

The NTK Gaussian process (Jacot et al. 2018; He, Lakshminarayanan & Teh 2020) and the
linearized Laplace approximation (Immer, Korzepa & Bauer 2021; Khan et al. 2019) give a
network a predictive distribution: a GP with prior covariance ``s·K`` for a scalar kernel K
(the eNTK of the trained network in trace mode, or the infinite-width NTK), prior mean m
(zero, or the trained network f_θ* in the linearized-Laplace view), and Gaussian noise σ².
For targets Y (N, O) whose O columns are independent outputs sharing (s, σ²):

    mean(x*)     = m(x*) + K*ᵀ (K + σ²/s · I)⁻¹ (Y − m(X))
    latent(x*)   = s (k** − K*ᵀ (K + σ²/s · I)⁻¹ K*)                 Var[f(x*) | Y]
    predictive   = latent(x*) + σ²                                    Var[y(x*) | Y]
    log p(Y)     = Σ_o [−½ r_oᵀ C⁻¹ r_o − ½ log|C| − N/2 log 2π],   C = sK + σ²I, r = Y − m(X)

with s the prior scale (prior precision 1/s) and σ² the noise. With the full eNTK
K = J Jᵀ, ``latent`` is exactly the linearized-Laplace (GGN) predictive variance with
prior N(0, s·I) and likelihood N(y; f, σ²) (Woodbury identity); with the trace kernel it
treats the outputs as independent with a shared kernel, which is exact for the infinite
NTK (Θ ⊗ I_O) and an approximation at finite width.

Everything is float64. One eigendecomposition ``K = V diag(λ) Vᵀ`` serves every (s, σ²):
``C = V diag(sλ + σ²) Vᵀ``, so the evidence and its gradient cost O(N·O) per evaluation
and `fit_hyperparameters` (type-II maximum likelihood, MacKay 1992) searches a grid over
(log s, log σ²) and refines the best point with L-BFGS-B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize

from ntkscope._checks import columns, columns_like, finite_float64, positive_real

__all__ = ["GPHyperparameters", "GPPrediction", "GaussianProcess"]

_GRID = 21
"""Grid points per axis of the hyperparameter search before refinement."""
_SCALE_RANGE = (-8.0, 8.0)
"""log s searched over log(v / k̄) + this range (k̄ the mean diagonal of K, v = mean r²)."""
_NOISE_RANGE = (-14.0, 3.0)
"""log σ² searched over log v + this range."""


@dataclass(frozen=True)
class GPHyperparameters:
    """Prior scale s (prior precision 1/s) and noise variance σ², both > 0."""

    prior_scale: float
    noise: float

    def __post_init__(self) -> None:
        for name in ("prior_scale", "noise"):
            object.__setattr__(self, name, positive_real(getattr(self, name), name))


@dataclass(frozen=True)
class GPPrediction:
    """Posterior at test inputs: mean (M, O), latent variance Var[f] (M,), and the
    predictive variance Var[y] = latent + σ² (M,), shared by the O outputs."""

    mean: torch.Tensor
    latent_variance: torch.Tensor
    variance: torch.Tensor


class GaussianProcess:
    """GP regression on (K, Y) with prior scale s, noise σ² and an optional prior mean.

    Args:
        kernel: K(X, X), (N, N) symmetric positive semi-definite scalar kernel.
        y: targets (N,) or (N, O): O independent outputs sharing the hyperparameters
            (one-hot labels for classification as regression).
        prior_mean: m(X), like ``y``; None for a zero prior mean.
    """

    def __init__(
        self, kernel: torch.Tensor, y: torch.Tensor, prior_mean: torch.Tensor | None = None
    ) -> None:
        kernel = finite_float64(kernel, "kernel")
        n = kernel.shape[0]
        if kernel.shape != (n, n) or n == 0:
            raise ValueError(f"kernel: expected a square (N, N) matrix, got {tuple(kernel.shape)}")
        y = columns(y, n, "y").to(kernel.device)
        self._has_prior_mean = prior_mean is not None
        if self._has_prior_mean:
            y = y - columns_like(prior_mean, y, "prior_mean").to(kernel.device)
        eigenvalues, self._vectors = torch.linalg.eigh((kernel + kernel.T) / 2)
        # the evidence is optimized by scipy on the host: (N,) and (N, O) arrays
        self._eigenvalues = eigenvalues.clamp_min(0.0).cpu().numpy()  # PSD up to rounding
        self._projected = (self._vectors.T @ y).cpu().numpy()  # Vᵀ r, (N, O)
        self._mean_diagonal = float(kernel.diagonal().mean())

    @property
    def ncolumns(self) -> int:
        """O, the number of independent outputs."""
        return self._projected.shape[1]

    def _evidence(self, log_scale: float, log_noise: float) -> tuple[float, np.ndarray]:
        """log p(Y) and its gradient in (log s, log σ²), from the eigendecomposition."""
        scale, noise = math.exp(log_scale), math.exp(log_noise)
        c = scale * self._eigenvalues + noise
        a = (self._projected**2).sum(axis=1)
        n, o = self._projected.shape
        value = (
            -0.5 * (a / c).sum() - 0.5 * o * np.log(c).sum() - 0.5 * n * o * math.log(2 * math.pi)
        )
        d_c = 0.5 * a / c**2 - 0.5 * o / c
        return float(value), np.array([d_c @ (scale * self._eigenvalues), d_c.sum() * noise])

    def log_marginal_likelihood(self, hyperparameters: GPHyperparameters) -> float:
        """log p(Y | s, σ²), summed over the O outputs (module docstring)."""
        h = hyperparameters
        return self._evidence(math.log(h.prior_scale), math.log(h.noise))[0]

    def fit_hyperparameters(self) -> GPHyperparameters:
        """(s, σ²) maximizing the log marginal likelihood (type-II maximum likelihood).

        A 21 × 21 grid over log s ∈ log(v/k̄) + [−8, 8] and log σ² ∈ log v + [−14, 3]
        (v the mean squared residual target, k̄ the mean of diag K), then L-BFGS-B from the
        best grid point within those bounds.
        """
        v = float((self._projected**2).mean()) or 1.0
        centre = np.array([math.log(v / max(self._mean_diagonal, 1e-300)), math.log(v)])
        bounds = [
            tuple(centre[i] + np.array(r)) for i, r in enumerate((_SCALE_RANGE, _NOISE_RANGE))
        ]
        grid = [np.linspace(*b, _GRID) for b in bounds]
        start = max(((a, b) for a in grid[0] for b in grid[1]), key=lambda p: self._evidence(*p)[0])
        result = optimize.minimize(
            lambda p: tuple(-v for v in self._evidence(*p)), np.array(start), jac=True,
            method="L-BFGS-B", bounds=bounds,
        )  # fmt: skip
        best = result.x if -result.fun >= self._evidence(*start)[0] else np.array(start)
        return GPHyperparameters(math.exp(best[0]), math.exp(best[1]))

    def predict(
        self,
        kernel_test_train: torch.Tensor,
        kernel_test_diagonal: torch.Tensor,
        hyperparameters: GPHyperparameters,
        prior_mean_test: torch.Tensor | None = None,
    ) -> GPPrediction:
        """Posterior mean and variances at M test inputs (module docstring formulas).

        Args:
            kernel_test_train: K(X*, X), (M, N).
            kernel_test_diagonal: k(x*, x*) for each test input, (M,).
            hyperparameters: (s, σ²), e.g. from `fit_hyperparameters`.
            prior_mean_test: m(X*), (M, O), the prior mean at the test inputs: given exactly
                when the process was built with a ``prior_mean``.

        Returns:
            The posterior on the device of the training kernel.

        Raises:
            ValueError: naming the argument (shapes, NaN/inf), and ``prior_mean_test`` when
                it is given without a prior mean at construction or missing with one.
        """
        if (prior_mean_test is not None) != self._has_prior_mean:
            state = "with" if self._has_prior_mean else "without"
            expected = (
                "m(X*), the prior mean at the test inputs" if self._has_prior_mean else "None"
            )
            raise ValueError(
                f"prior_mean_test: the process was built {state} a prior_mean; expected {expected}"
            )
        n, device = self._eigenvalues.shape[0], self._vectors.device
        ks = finite_float64(kernel_test_train, "kernel_test_train").to(device)
        if ks.dim() != 2 or ks.shape[1] != n:
            raise ValueError(f"kernel_test_train: expected (M, {n}), got {tuple(ks.shape)}")
        m = ks.shape[0]
        diagonal = finite_float64(kernel_test_diagonal, "kernel_test_diagonal").to(device)
        if diagonal.shape != (m,):
            raise ValueError(f"kernel_test_diagonal: expected ({m},), got {tuple(diagonal.shape)}")
        s, noise = hyperparameters.prior_scale, hyperparameters.noise
        # (K + σ²/s I)⁻¹ in the eigenbasis V
        inverse = 1.0 / torch.from_numpy(self._eigenvalues + noise / s).to(device)
        projected = ks @ self._vectors  # K* V, (M, N)
        mean = (projected * inverse) @ torch.from_numpy(self._projected).to(device)
        if prior_mean_test is not None:
            mean = mean + columns_like(prior_mean_test, mean, "prior_mean_test").to(device)
        latent = (s * (diagonal - (projected**2 * inverse).sum(dim=1))).clamp_min(0.0)
        return GPPrediction(mean, latent, latent + noise)
