"""Quadrature rules of the series duals (`ntkscope.kernels._series_dual`).

- The 1-D rule `rule` for E[f(z)], z ~ N(0, 1): composite 16-point Gauss–Legendre on
  |z| ≤ 14, panels graded towards z = 0 (where φ(√q z) turns on the scale 1/√q); it gives
  the Hermite coefficients (`weighted_hermite`), the energies E[f²] and, at |ρ| = 1, the
  expectation E[f(√q1 z) f(±√q2 z)] itself (`line`).
- The 2-D product rule `plane` for entries that no series length certifies (large q with
  |ρ| near 1): composite Gauss–Legendre in a = z (split and graded at a = 0) and in t,
  w = ρ a + √(1 − ρ²) t (split and graded at the kink t = −ρ a / √(1 − ρ²)); ~1.3·10⁵
  evaluations of φ per entry, slow but rare (measured error ≤ 1e-11 on the test table).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ntkscope.kernels._activation_values import both, check_moments, evaluate
from ntkscope.models.activations import Activation

Pair = tuple[torch.Tensor, torch.Tensor]

LOW = 64
"""Hermite orders up to this use the rule with panels of width 0.5 (`rule`)."""


def hermite_coefficients(act: Activation, q: torch.Tensor, order: int, count: int) -> Pair:
    """((2, n, count), (2, n)): the Hermite coefficients E[f(√q z) h_k(z)], k < ``count`` ≤
    ``order``, and the energies E[f(√q z)²] of f = φ, φ' at the variances q, by `rule(order)`.

    Computed for `_CHUNK` variances at a time, whose node values (~0.3 MB per array) stay in
    cache, φ and φ' each by one matrix product with `weighted_hermite`."""
    z, w = (t.to(q.device) for t in rule(order))
    weighted = weighted_hermite(order)[:, :count].contiguous().to(q.device)
    coefficients, energies = [], []
    for part in q.split(_CHUNK):
        u = part.sqrt()[:, None] * z
        pair = act.fn(u), act.derivative(u)
        coefficients.append(torch.stack([f @ weighted for f in pair]))
        energies.append(torch.stack([(f * f) @ w for f in pair]))
    energies = torch.cat(energies, 1)
    check_moments(act, q, z, energies)  # a user's φ: finite
    return torch.cat(coefficients, 1), energies


_CHUNK = 32
"""Variances per batch of `hermite_coefficients`."""


def values(act: Activation, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(2, n, M): φ(√q z) and φ'(√q z) at the nodes z."""
    u = q.sqrt()[:, None] * z.to(q.device)
    return torch.stack(both(act, u))


def line(act: Activation, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """(2, P): E[f(√q1 z) f(±√q2 z)] for f = φ, φ' at ρ = ±1, by the 1-D rule (whose nodes
    are symmetric: f(−√q2 z) is f(√q2 z) read backwards)."""
    z, w = rule(LOW)
    u, v = values(act, q1, z), values(act, q2, z)  # (2, P, M)
    v = torch.where((rho < 0)[None, :, None], v.flip(-1), v)
    return (u * v) @ w.to(rho.device)


PLANE_CHUNK = 8
"""Entries per batch of the 2-D rule (~2·10⁵ nodes each: ~13 MB per array)."""


def plane(act: Activation, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """(2, P): both expectations by the 2-D product rule of the module docstring."""
    s = (1 - rho * rho).sqrt()
    widths = torch.stack([q1.rsqrt(), q2.rsqrt(), s, torch.ones_like(s)])  # features in a
    finest = 0.02 * widths.min(0).values.clamp_min(5e-11)
    a, wa = _geometric(finest)  # (P, Ma), graded towards a = 0 down to ``finest``
    kink = (-rho[:, None] * a / s[:, None]).clamp(-_SPAN, _SPAN)
    x, wx = (t.to(q1.device) for t in _unit_split())
    t, wt = _graded(kink, x, wx)  # (P, Ma, Mt)
    u = q1.sqrt()[:, None] * a
    v = q2.sqrt()[:, None, None] * (rho[:, None, None] * a[..., None] + s[:, None, None] * t)
    outer = wa * torch.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    inner = wt * torch.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    e_ff = ((evaluate(act, v) * inner).sum(-1) * evaluate(act, u) * outer).sum(-1)
    e_dd = (
        (evaluate(act, v, derivative=True) * inner).sum(-1)
        * evaluate(act, u, derivative=True)
        * outer
    ).sum(-1)
    return torch.stack([e_ff, e_dd])


_SPAN = 10.0
"""Both variables of the 2-D rule are integrated over [−10, 10] (Gaussian mass beyond: 2e-23)."""
_OUTER = 2.0 ** -np.arange(10, 2, -1)
"""Inner rule: panel edges (fractions of each side) graded to the kink, then 1/4, 3/8, .., 1."""
_GEOMETRIC_PANELS = 24
"""Outer rule: panels per side, edges in geometric progression from ``finest`` to SPAN."""


def _geometric(finest: torch.Tensor) -> Pair:
    """(P, M) nodes and weights on [−SPAN, SPAN], split at 0, panel edges ±SPAN·r^j with
    r^J = finest / SPAN (ratio ≤ 3.2 for finest ≥ 1e-12), and the panel [0, finest]."""
    x, w = (torch.from_numpy(t).to(finest.device) for t in np.polynomial.legendre.leggauss(16))
    j = torch.arange(_GEOMETRIC_PANELS, -1, -1, dtype=torch.float64, device=finest.device)
    ratio = (finest / _SPAN)[:, None] ** (j / _GEOMETRIC_PANELS)  # (P, J+1), ascending
    edges = torch.cat([torch.zeros_like(finest)[:, None], _SPAN * ratio], 1)
    mid, half = (edges[:, 1:] + edges[:, :-1]) / 2, (edges[:, 1:] - edges[:, :-1]) / 2
    nodes = (mid[..., None] + half[..., None] * x).flatten(1)
    weights = (half[..., None] * w).flatten(1)
    return torch.cat([-nodes, nodes], 1), torch.cat([weights, weights], 1)


def _graded(kink: torch.Tensor, x: torch.Tensor, wx: torch.Tensor) -> Pair:
    """Nodes and weights on [−SPAN, kink] ∪ [kink, SPAN], graded towards ``kink``.

    ``x``, ``wx``: a rule on [−1, 1] split and graded at 0; [−1, 0] is mapped onto
    [−SPAN, kink] and [0, 1] onto [kink, SPAN], each linearly."""
    left, right = kink + _SPAN, _SPAN - kink  # lengths
    scale = torch.where(x < 0, left[..., None], right[..., None])
    return kink[..., None] + x * scale, wx * scale


@functools.cache
def _unit_split() -> Pair:
    """A composite Gauss–Legendre rule on [−1, 1], panels graded towards 0 on both sides."""
    return _split_rule(0.0, _OUTER, span=1.0)


def _split_rule(center: float, grading: np.ndarray, span: float = _SPAN) -> Pair:
    """Composite 16-point Gauss–Legendre on [center − span, center + span], split at center,
    panel edges at span·(grading, 1/4, 3/8, ..., 1) on each side."""
    fractions = np.concatenate([[0.0], grading, np.arange(0.25, 1.0 + 1e-9, 0.125)])
    positive = span * fractions
    edges = center + np.concatenate([-positive[::-1], positive[1:]])
    return _composite(edges)


def _composite(edges: np.ndarray) -> Pair:
    """16-point Gauss–Legendre on each panel [edges[i], edges[i+1]]."""
    x, w = np.polynomial.legendre.leggauss(16)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    nodes = (mid[:, None] + half[:, None] * x).ravel()
    return torch.from_numpy(nodes), torch.from_numpy((half[:, None] * w).ravel())


@functools.cache
def rule(order: int) -> Pair:
    """Nodes z and weights (density included) for E[f(z)], z ~ N(0, 1), exact enough for the
    Hermite coefficients up to ``order``: panels of width 0.5 (0.25 beyond order 64, where
    h_k oscillates faster) on |z| ≤ 14 (|h_k| p ≤ √p < 1e-21 beyond), graded towards 0 down
    to 2^-14 (φ(√q z) turns on the scale 1/√q ≥ 0.01 for q ≤ 1e4)."""
    spacing = 0.5 if order <= LOW else 0.25
    limit = 14.0
    inner = 0.25 * 2.0 ** -np.arange(12, 0, -1)  # down to 2^-14
    positive = np.concatenate([[0.0], inner, np.arange(0.25, limit + 1e-9, spacing)])
    nodes, weights = _composite(np.concatenate([-positive[::-1], positive[1:]]))
    return nodes, weights * torch.exp(-nodes * nodes / 2) / math.sqrt(2 * math.pi)


@functools.cache
def weighted_hermite(order: int) -> torch.Tensor:
    """(M, order): w_m h_k(z_m) on the nodes of `rule(order)`, via the Hermite functions
    ψ_k = h_k √p, whose recurrence stays bounded (|ψ_k| < 1)."""
    z, w = rule(order)
    root = torch.exp(-z * z / 4) / (2 * math.pi) ** 0.25  # √p(z)
    psi = torch.empty(len(z), order, dtype=torch.float64)
    psi[:, 0] = root
    psi[:, 1] = z * root
    for k in range(1, order - 1):
        psi[:, k + 1] = (z * psi[:, k] - math.sqrt(k) * psi[:, k - 1]) / math.sqrt(k + 1)
    return psi * (w / root)[:, None]
