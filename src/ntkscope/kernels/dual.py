"""Dual activations: the Gaussian expectations that drive the infinite-width recursions.

For (u, v) ~ N(0, [[q1, c], [c, q2]]) the dual of an activation φ is the pair

    E[φ(u) φ(v)]   and   E[φ'(u) φ'(v)],

the two expectations in the NNGP and NTK recursions of docs/conventions.md. ReLU, erf and the
identity have closed forms; every other activation (tanh, sigmoid, gelu, any callable) is
integrated by two-dimensional Gauss–Hermite quadrature.

Measured accuracy of the quadrature at the default ``deg = 64``: maximum absolute error /
maximum error relative to √(E[f(u)²] E[f(v)²]) (the Cauchy–Schwarz scale of E[f(u) f(v)])
of either expectation, over 121 (q1, q2, ρ) per band: 40 random (q1, q2 log-uniform in the
band; ρ uniform in (−1, 1), within 1e-6..1e-1 of ±1, or exactly ±1) and the grid
q1, q2 ∈ {low, middle, high} × ρ ∈ {0, ±0.9, ±0.999, ±0.999999, ±1}. Reference: a
1600-node trapezoid rule on [−10, 10]², which agrees with ``scipy.integrate.dblquad`` to
2e-16 on the hardest band. "sin" is a user callable, differentiated by autograd.

    q1, q2 in   tanh           sigmoid         gelu            sin
    [0.1, 1]    1e-7 / 3e-7    2e-16 / 5e-16   2e-16 / 7e-16   4e-16 / 8e-16
    [1, 3]      3e-4 / 9e-4    4e-10 / 1e-8    2e-8  / 4e-8    7e-16 / 2e-15
    [3, 10]     2e-2 / 9e-2    6e-6  / 3e-4    2e-3  / 3e-3    8e-16 / 2e-15

The worst cases are the largest variances with |ρ| near 1. Gauss–Hermite converges slowly
when φ(√q z) varies on a scale much finer than z: its error is governed by the distance of
φ's complex singularities from the real axis (π / (2√q) for tanh). The tanh errors per band
are 5e-5, 6e-3, 6e-2 at deg = 32 and 7e-10, 2e-5, 4e-3 at deg = 96 (absolute); cost and
memory grow as deg².
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ntkscope.models.activations import (
    Activation,
    ActivationName,
    Elementwise,
    resolve_activation,
)

DEFAULT_QUADRATURE_DEGREE = 64
"""Gauss–Hermite nodes per dimension (accuracy: see the module docstring)."""

CLOSED_FORMS = frozenset({ActivationName.RELU, ActivationName.ERF, ActivationName.IDENTITY})
"""Built-in activations whose duals are computed exactly, without quadrature."""

RELU_THETA_SNAP = 2e-7
"""θ = arccos ρ below this counts as 0 in ReLU's E[φ'(u) φ'(v)] = (π − θ)/(2π).

arccos has infinite slope at ρ = 1: the few-ulp rounding that c accumulates over layers
puts duplicate inputs at θ up to 6e-8 (measured, depth 10) instead of 0, which moves the
NTK entry by ~1e-8 relative and leaves the NTK of duplicate inputs indefinite at that
level. Snapping makes such entries exact; for genuine θ < 2e-7 it changes the expectation
by at most θ/(2π) < 3.2e-8 (relative to its value 1/2: 6.4e-8)."""

Pair = tuple[torch.Tensor, torch.Tensor]
ActivationLike = str | Elementwise | Activation


def dual(
    activation: ActivationLike,
    q1: torch.Tensor,
    q2: torch.Tensor,
    c: torch.Tensor,
    *,
    deg: int = DEFAULT_QUADRATURE_DEGREE,
) -> Pair:
    """(E[φ(u) φ(v)], E[φ'(u) φ'(v)]) for (u, v) ~ N(0, [[q1, c], [c, q2]]).

    With ρ = c / √(q1 q2) clamped to [−1, 1] (ρ = 0 where q1 q2 = 0) and θ = arccos ρ:

    - ReLU (arc-cosine kernels of degree 1 and 0, Cho & Saul 2009, "Kernel Methods for
      Deep Learning"): √(q1 q2) (sin θ + (π − θ) cos θ) / (2π) and (π − θ) / (2π), the
      latter with θ < `RELU_THETA_SNAP` taken as 0.
    - erf (Williams 1997, "Computing with infinite networks"):
      (2/π) arcsin(2c / √((1 + 2q1)(1 + 2q2))) and (4/π) / √((1 + 2q1)(1 + 2q2) − 4c²).
    - identity: c and 1.
    - otherwise: Gauss–Hermite quadrature with ``deg`` nodes z_i and weights w_i (summing
      to 1) per dimension, u_i = √q1 z_i, v_ij = √q2 (ρ z_i + √(1 − ρ²) z_j):
      E[f(u) g(v)] ≈ Σ_i w_i f(u_i) Σ_j w_j g(v_ij). Accuracy: see the module docstring.

    Args:
        activation: a built-in name, an elementwise callable or an `Activation`.
        q1: Σ(x, x), broadcastable with ``q2`` and ``c``; q1 ≥ 0.
        q2: Σ(x', x'); q2 ≥ 0.
        c: Σ(x, x').
        deg: quadrature nodes per dimension; the quadrature works on broadcast(q1, q2, c)
            × deg² values at once, so memory grows as deg².

    Returns:
        Two float64 tensors of the broadcast shape of (q1, q2, c).
    """
    act = resolve_activation(activation)
    q1, q2, c = (torch.as_tensor(t, dtype=torch.float64) for t in (q1, q2, c))
    rho = _correlation(q1, q2, c)
    if act.builtin is ActivationName.RELU:
        theta = torch.acos(rho)
        sin_theta = (1 - rho * rho).sqrt_()
        scale = q1.sqrt() / (2 * math.pi) * q2.sqrt()  # outer product when q1, q2 are vectors
        e_ff = torch.addcmul(sin_theta, math.pi - theta, rho, out=sin_theta).mul_(scale)
        theta.masked_fill_(theta < RELU_THETA_SNAP, 0.0)
        return e_ff, theta.mul_(-1 / (2 * math.pi)).add_(0.5)
    if act.builtin is ActivationName.ERF:
        c = rho * (q1 * q2).sqrt()
        det = (1 + 2 * q1) * (1 + 2 * q2)
        return 2 / math.pi * torch.asin(2 * c / det.sqrt()), 4 / math.pi / (det - 4 * c * c).sqrt()
    if act.builtin is ActivationName.IDENTITY:
        shape = rho.shape
        return c.expand(shape).clone(), torch.ones(shape, dtype=torch.float64, device=c.device)
    return _quadrature(act, q1, q2, rho, deg)


def dual_diagonal(
    activation: ActivationLike, q: torch.Tensor, *, deg: int = DEFAULT_QUADRATURE_DEGREE
) -> Pair:
    """(E[φ(√q z)²], E[φ'(√q z)²]) for z ~ N(0, 1): `dual` on its diagonal q1 = q2 = c = q.

    Closed forms: ReLU q/2 and 1/2; erf (2/π) arcsin(2q / (1 + 2q)) and (4/π) / √(1 + 4q);
    identity q and 1. Otherwise the same ``deg``-node Gauss–Hermite rule as `dual` (so the
    two agree exactly on the diagonal): E[f(√q z)²] ≈ Σ_i w_i f(√q z_i)².

    Args:
        activation: a built-in name, an elementwise callable or an `Activation`.
        q: variances, any shape, q ≥ 0.
        deg: Gauss–Hermite nodes (ignored by the closed forms).

    Returns:
        Two float64 tensors shaped like ``q``.
    """
    act = resolve_activation(activation)
    q = torch.as_tensor(q, dtype=torch.float64)
    if act.builtin is ActivationName.RELU:
        return q / 2, torch.full_like(q, 0.5)
    if act.builtin is ActivationName.ERF:
        return 2 / math.pi * torch.asin(2 * q / (1 + 2 * q)), 4 / math.pi / (1 + 4 * q).sqrt()
    if act.builtin is ActivationName.IDENTITY:
        return q.clone(), torch.ones_like(q)
    z, w = _hermite(deg, q.device)
    u = q.sqrt().unsqueeze(-1) * z
    return act.fn(u).square() @ w, act.derivative(u).square() @ w


def _correlation(q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """ρ = c / √(q1 q2) clamped to [−1, 1]; 0 where q1 q2 = 0 (a zero-variance input)."""
    inv1, inv2 = (torch.where(q > 0, q.rsqrt(), 0.0) for q in (q1, q2))
    return (c * inv1 * inv2).clamp_(-1.0, 1.0)


def _quadrature(
    act: Activation, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor, deg: int
) -> Pair:
    """Both expectations by the ``deg`` × ``deg`` Gauss–Hermite rule of `dual`."""
    z, w = _hermite(deg, rho.device)
    u = q1.sqrt().unsqueeze(-1) * z  # (..., deg): φ(u_i) once per row node
    s2 = q2.sqrt()
    along = (s2 * rho)[..., None, None] * z[:, None]  # (..., deg, 1)
    across = (s2 * (1 - rho * rho).sqrt())[..., None, None] * z  # (..., 1, deg)
    v = along + across  # (..., deg, deg)
    fv = act.fn(v)
    from_value = _DERIVATIVE_FROM_VALUE.get(act.builtin)
    dv = act.derivative(v) if from_value is None else from_value(fv)
    e_ff = (w * act.fn(u) * (fv @ w)).sum(-1)
    e_dd = (w * act.derivative(u) * (dv @ w)).sum(-1)
    return e_ff, e_dd


_DERIVATIVE_FROM_VALUE: dict[ActivationName | None, Elementwise] = {
    ActivationName.TANH: lambda t: 1 - t * t,  # tanh' = 1 − tanh²: saves a tanh per node
    ActivationName.SIGMOID: lambda s: s - s * s,  # σ' = σ (1 − σ)
}


@functools.lru_cache(maxsize=16)
def _hermite_numpy(deg: int) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite_e.hermegauss(deg)
    return z, w / w.sum()


def _hermite(deg: int, device: torch.device) -> Pair:
    """Probabilists' Gauss–Hermite nodes and weights normalized to sum 1 (E over N(0, 1))."""
    z, w = _hermite_numpy(deg)
    return torch.tensor(z, device=device), torch.tensor(w, device=device)
