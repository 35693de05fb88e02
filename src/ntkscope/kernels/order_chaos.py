"""Order and chaos of deep networks at initialization (mean-field signal propagation).

Poole et al. 2016, "Exponential expressivity in deep neural networks through transient
chaos"; Schoenholz et al. 2017, "Deep Information Propagation". With z ~ N(0, 1):

    q ↦ F(q) = σ_w² E[φ(√q z)²] + σ_b²        (the NNGP diagonal, layer to layer)
    q* = F(q*)                                (its fixed point)
    χ_1 = σ_w² E[φ'(√q* z)²]                  (slope of the correlation map at c = 1)

χ_1 < 1: ordered (correlations → 1, gradients vanish); χ_1 > 1: chaotic (correlations
decorrelate, gradients explode); χ_1 = 1: the edge of chaos. Examples, exact: ReLU has
χ_1 = σ_w²/2 at every q, so its edge is σ_w² = 2; erf with σ_b = 0 has q* = 0 and
χ_1 = σ_w² · 4/π (since erf'(0) = 2/√π), so its edge is σ_w² = π/4; tanh (tanh'(0) = 1)
with σ_b = 0 has its edge at σ_w = 1. For σ_b > 0 the tanh/erf edge is a curve to larger
σ_w.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from scipy.optimize import brentq

from ntkscope._checks import nonnegative_real
from ntkscope.kernels._activation_values import check_moments
from ntkscope.kernels.dual import CLOSED_FORMS, ActivationLike, dual_diagonal
from ntkscope.models.activations import Activation, resolve_activation

EDGE_TOLERANCE = 1e-6
"""|χ_1 − 1| below this is the edge of chaos."""
FIXED_POINT_RTOL = 1e-12
"""F(1) within this relative distance of 1 makes q0 = 1 itself the fixed point."""
_Q_MAX = 1e15  # no fixed point up to here: q* = inf
_Q_MIN = 2.0**-100  # F(0) = 0 and F(q) < q down to here: q* = 0


class Phase(StrEnum):
    """Phase of the network at initialization, from χ_1."""

    ORDERED = "ordered"
    """χ_1 < 1 − EDGE_TOLERANCE: inputs become correlated with depth; vanishing gradients."""
    CHAOTIC = "chaotic"
    """χ_1 > 1 + EDGE_TOLERANCE: nearby inputs decorrelate with depth; exploding gradients."""
    EDGE_OF_CHAOS = "edge_of_chaos"
    """|χ_1 − 1| ≤ EDGE_TOLERANCE: signals propagate furthest (Schoenholz et al. 2017)."""


@dataclass(frozen=True)
class OrderChaos:
    """Mean-field fixed point of an MLP at initialization.

    Attributes:
        q_star: fixed point q* of the NNGP diagonal map; ``math.inf`` when the iteration
            from q0 = 1 diverges (no finite fixed point above 1).
        chi_1: σ_w² E[φ'(√q* z)²]; when q* is infinite, its limit q → ∞, evaluated at
            q = 1e15 (exact for ReLU, σ_w²/2, and identity, σ_w²).
        phase: ordered, chaotic or edge of chaos, by comparing ``chi_1`` with 1.
    """

    q_star: float
    chi_1: float
    phase: Phase


def order_chaos(activation: ActivationLike, sigma_w: float, sigma_b: float) -> OrderChaos:
    """q*, χ_1 and phase of an MLP with activation φ, weight std σ_w and bias std σ_b.

    q* is the limit of the iteration q_{l+1} = F(q_l) from q0 = 1 (F as in the module
    docstring), found by bracketing and Brent's method assuming F is non-decreasing (true
    for every built-in activation): the largest fixed point below 1 when F(1) < 1, the
    smallest above 1 when F(1) > 1, inf when there is none below 1e15. Where every q is a
    fixed point (ReLU with σ_w² = 2, identity with σ_w = 1, σ_b = 0) that limit is q0 = 1.

    Expectations are exact for ReLU, erf and identity; otherwise a composite 16-point
    Gauss–Legendre rule on z ∈ [−10, 10] whose panels shrink geometrically towards 0 down
    to width 0.05/√q resolves φ(√q z) at every q (measured against scipy.integrate.quad
    for tanh, sigmoid and gelu, q from 1e-6 to 1e4: relative error ≤ 4e-16). This departs
    from the Gauss–Hermite rule of `ntkscope.kernels.dual` on purpose: Gauss–Hermite cannot
    resolve the steep φ(√q z) of large q, which the divergence test (q* = inf) must reach.

    Args:
        activation: a built-in name, an elementwise callable or an `Activation`.
        sigma_w: weight standard deviation σ_w ≥ 0.
        sigma_b: bias standard deviation σ_b ≥ 0.

    Returns:
        An `OrderChaos` (q*, χ_1, phase).
    """
    act = resolve_activation(activation)
    weight_var = nonnegative_real(sigma_w, "sigma_w") ** 2
    bias_var = nonnegative_real(sigma_b, "sigma_b") ** 2
    q_star = _fixed_point(lambda q: weight_var * _moments(act, q)[0] + bias_var)
    chi_1 = weight_var * _moments(act, min(q_star, _Q_MAX))[1]
    if chi_1 < 1 - EDGE_TOLERANCE:
        phase = Phase.ORDERED
    elif chi_1 > 1 + EDGE_TOLERANCE:
        phase = Phase.CHAOTIC
    else:
        phase = Phase.EDGE_OF_CHAOS
    return OrderChaos(q_star=q_star, chi_1=chi_1, phase=phase)


def _fixed_point(variance_map: Callable[[float], float]) -> float:
    """Limit of q ← F(q) from q = 1 for a non-decreasing F ≥ 0 (see `order_chaos`)."""

    def gap(q: float) -> float:
        return variance_map(q) - q

    def solve(lo: float, hi: float) -> float:  # on F(q)/q − 1: O(1) values at every scale
        return brentq(lambda q: variance_map(q) / q - 1, lo, hi, xtol=1e-300, rtol=1e-14)

    if math.isclose(variance_map(1.0), 1.0, rel_tol=FIXED_POINT_RTOL):
        return 1.0
    if gap(1.0) < 0:  # q decreases: the largest fixed point below 1
        # F(0) > 0 puts a fixed point above 0: halve until the sign changes (it must before
        # q underflows). F(0) = 0 makes 0 the fixed point unless one shows up above 2^-100.
        floor = 0.0 if gap(0.0) > 0 else _Q_MIN
        hi = 1.0
        while hi / 2 > floor:
            if gap(hi / 2) >= 0:
                return solve(hi / 2, hi)
            hi /= 2
        return 0.0
    lo = 1.0  # q increases: the smallest fixed point above 1
    while lo < _Q_MAX:
        if gap(2 * lo) < 0:  # strict: F(q) = q by rounding alone (σ_b² < eps·q) is no root
            return solve(lo, 2 * lo)
        lo *= 2
    return math.inf


def _moments(act: Activation, q: float) -> tuple[float, float]:
    """(E[φ(√q z)²], E[φ'(√q z)²]) for z ~ N(0, 1)."""
    if act.builtin in CLOSED_FORMS:
        e_ff, e_dd = dual_diagonal(act, torch.tensor(q, dtype=torch.float64))
        return float(e_ff), float(e_dd)
    z, w = _graded_rule(q)
    u = math.sqrt(q) * z
    moments = torch.stack([f.square() @ w for f in (act.fn(u), act.derivative(u))])
    check_moments(act, torch.tensor([q]), z, moments[:, None])  # a user's φ: finite
    return float(moments[0]), float(moments[1])


def _graded_rule(q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z and weights (Gaussian density included) for E[f(√q z)], z ~ N(0, 1).

    16-point Gauss–Legendre on panels of width 0.5 for 0.5 ≤ |z| ≤ 10 and on geometrically
    halving panels [h, 2h] below, down to h ≤ 0.05/√q, plus [−h, h]: φ(√q z) varies on the
    scale 1/√q around 0 and the panels follow it. Truncation at |z| = 10 costs 1e-23.
    """
    levels = max(0, math.ceil(math.log2(10 * math.sqrt(q)))) if q > 0 else 0
    inner = 0.5 * 2.0 ** -np.arange(levels, 0, -1)  # h, 2h, ..., 0.25
    positive = np.concatenate([inner, np.arange(0.5, 10.25, 0.5)])
    edges = np.concatenate([-positive[::-1], positive])
    x, w = _legendre()
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    nodes = (mid[:, None] + half[:, None] * x).ravel()
    weights = (half[:, None] * w).ravel() * np.exp(-(nodes**2) / 2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


@functools.cache
def _legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(16)
