"""Independent float64 references for the dual activations, by nested adaptive quadrature.

    python tests/kernels/dual_reference.py       # rewrites tests/kernels/data/dual_reference.npz

For (u, v) ~ N(0, [[q1, c], [c, q2]]) with ρ = c/√(q1 q2), s = √(1 − ρ²):

    E[f(u) g(v)] = ∫ p(a) f(√q1 a) ∫ p(t) g(√q2 (ρ a + s t)) dt da,   p the N(0, 1) density,

each integral by ``scipy.integrate.quad`` (QUADPACK, adaptive Gauss–Kronrod) with the point
where the integrand's argument crosses 0 (a = 0 outside, t = −ρa/s inside) and the widths
of its features (a = ±s, ±10 s, ±1/√q1, ±1/√q2 outside) given as breakpoints, |a|, |t| ≤ 13 (the Gaussian mass beyond is < 1e-37), absolute tolerance 1e-15 and
relative 1e-12. At |ρ| = 1 the inner integral is g(±√q2 a). The activations are written here
on Python floats with `math`, apart from the package. This is slow (~0.1–0.5 s per point), hence the
stored table; `test_dual.py` recomputes a few points live.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import integrate

TABLE = Path(__file__).resolve().parent / "data" / "dual_reference.npz"
LIMIT = 13.0
SLOPE = 0.01  # leaky_relu


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _mish_derivative(x: float) -> float:
    t = math.tanh(_softplus(x))
    return t + x * (1 - t * t) * _sigmoid(x)


def _sign(x: float) -> float:
    return math.copysign(1.0, x) if x else 0.0


ACTIVATIONS = {  # (φ, φ') on Python floats
    "relu": (lambda x: max(x, 0.0), lambda x: float(x > 0)),
    "leaky_relu": (lambda x: x if x > 0 else SLOPE * x, lambda x: 1.0 if x > 0 else SLOPE),
    "abs": (abs, _sign),
    "identity": (lambda x: x, lambda x: 1.0),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
    "gelu": (
        lambda x: x * math.erfc(-x / math.sqrt(2)) / 2,
        lambda x: (
            math.erfc(-x / math.sqrt(2)) / 2 + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "sin": (math.sin, math.cos),
    "cos": (math.cos, lambda x: -math.sin(x)),
    "sign": (_sign, lambda x: 0.0),
    "step": (lambda x: float(x > 0), lambda x: 0.0),
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x)),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * _sigmoid(-x))),
    "softplus": (_softplus, _sigmoid),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x)),
    "mish": (lambda x: x * math.tanh(_softplus(x)), _mish_derivative),
}


def _density(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _quad(fn, lo, hi, *points):
    inside = sorted({p for p in points if lo < p < hi}) or None
    value, _ = integrate.quad(fn, lo, hi, points=inside, epsabs=1e-15, epsrel=1e-12, limit=400)
    return value


def expectation(f, g, q1: float, q2: float, rho: float) -> float:
    """E[f(u) g(v)] by the nested quadrature of the module docstring."""
    r1, r2 = math.sqrt(q1), math.sqrt(q2)
    s = math.sqrt(max(0.0, 1 - rho * rho))
    if s == 0.0:
        return _quad(lambda a: _density(a) * f(r1 * a) * g(r2 * rho * a), -LIMIT, LIMIT, 0.0)

    def inner(a: float) -> float:
        return _quad(lambda t: _density(t) * g(r2 * (rho * a + s * t)), -LIMIT, LIMIT, -rho * a / s)

    # features of the outer integrand: a kink at 0, widths 1/√q1 and s (the inner smoothing)
    scales = (s, 10 * s, 1 / r1, 1 / r2)
    points = [0.0, *scales, *(-x for x in scales)]
    return _quad(lambda a: _density(a) * f(r1 * a) * inner(a), -LIMIT, LIMIT, *points)


def points(count: int, seed: int) -> np.ndarray:
    """(count, 3) rows (q1, q2, ρ): q log-uniform in [1e-4, 1e2], ρ spread over [−1, 1] with
    a third within 1e-1..1e-7 of ±1, plus the corners q ∈ {1e-4, 1, 100}² at ρ ∈ {±1, ±0.999}."""
    rng = np.random.default_rng(seed)
    corners = [(a, b, r) for a in (1e-4, 1.0, 100.0) for b in (1e-4, 100.0) for r in (1, -1, 0.999)]
    n = count - len(corners)
    q = 10.0 ** rng.uniform(-4, 2, size=(n, 2))
    rho = rng.uniform(-1, 1, size=n)
    near = rng.random(n) < 1 / 3
    rho[near] = np.sign(rho[near]) * (1 - 10.0 ** rng.uniform(-7, -1, size=near.sum()))
    return np.concatenate([np.array(corners), np.column_stack([q, rho])])


def references(name: str, rows: np.ndarray) -> np.ndarray:
    """(len(rows), 2): E[φ(u) φ(v)] and E[φ'(u) φ'(v)] at each (q1, q2, ρ)."""
    fn, derivative = ACTIVATIONS[name]
    return np.array([[expectation(h, h, *row) for h in (fn, derivative)] for row in rows])


def main() -> None:
    rows = points(200, seed=0)
    table = {"points": rows}
    for name in ACTIVATIONS:
        table[name] = references(name, rows)
        print(name, flush=True)
    TABLE.parent.mkdir(exist_ok=True)
    np.savez_compressed(TABLE, **table)


if __name__ == "__main__":
    main()
