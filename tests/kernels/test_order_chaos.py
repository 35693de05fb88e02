"""Order/chaos fixed points against exact results and a brute-force iteration.

The brute-force reference iterates q ← σ_w² E[φ(√q z)²] + σ_b² from q = 1 with every
expectation by scipy.integrate.quad on hand-written scalar activations, until q stops
changing, then evaluates χ_1 = σ_w² E[φ'(√q* z)²] the same way.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import brentq

from ntkscope.kernels.infinite import infinite_kernels
from ntkscope.kernels.order_chaos import EDGE_TOLERANCE, OrderChaos, Phase, order_chaos
from reference import SCALAR, TORCH


def gaussian_square(f, q: float) -> float:
    """E[f(√q z)²], z ~ N(0, 1), converged to ~1e-13."""
    return quad(
        lambda z: f(math.sqrt(q) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
        -12,
        12,
        points=[0.0],
        epsabs=1e-15,
        epsrel=1e-13,
        limit=200,
    )[0]


def brute_force(name: str, sigma_w: float, sigma_b: float) -> tuple[float, float]:
    phi, dphi = SCALAR[name]
    q = 1.0
    for _ in range(20000):
        q, previous = sigma_w**2 * gaussian_square(phi, q) + sigma_b**2, q
        if abs(q - previous) <= 1e-15 * max(q, 1e-300):
            break
    return q, sigma_w**2 * gaussian_square(dphi, q)


# The brute-force iteration stops within ~1e-15/(1 − F'(q*)) of q* and its integrals carry
# ~1e-13; the package solves F(q) = q by Brent's method to 1e-14 with ~1e-15 integrals:
# 1e-9 relative (or 1e-12 absolute at q* = 0) leaves a wide margin.
@pytest.mark.parametrize(
    ("name", "sigma_w", "sigma_b"),
    [
        ("tanh", 1.5, 0.3),
        ("tanh", 0.8, 0.5),
        ("tanh", 0.9, 0.0),
        ("erf", 1.2, 0.2),
        ("sigmoid", 3.0, 0.1),
        ("gelu", 1.5, 0.1),
        ("sin", 2.0, 0.1),
    ],
)
def test_matches_brute_force_iteration(name, sigma_w, sigma_b):
    q_star, chi_1 = brute_force(name, sigma_w, sigma_b)
    got = order_chaos(TORCH.get(name, name), sigma_w, sigma_b)
    assert got.q_star == pytest.approx(q_star, rel=1e-9, abs=1e-12)
    assert got.chi_1 == pytest.approx(chi_1, rel=1e-9)


@given(st.floats(0.0, 3.0), st.floats(0.0, 2.0))
def test_relu_exact(sigma_w, sigma_b):
    # ReLU: E[φ(√q z)²] = q/2 and E[φ'²] = 1/2, so F(q) = σ_w² q/2 + σ_b² and χ_1 = σ_w²/2.
    assume(abs(sigma_w**2 - 2) > 1e-9)  # the neutral map itself is tested below
    got = order_chaos("relu", sigma_w, sigma_b)
    assert got.chi_1 == sigma_w**2 / 2
    assert got.phase is (Phase.ORDERED if sigma_w**2 < 2 else Phase.CHAOTIC)
    if sigma_w**2 < 2:  # Brent's method to 1e-14 relative: 1e-12
        assert got.q_star == pytest.approx(sigma_b**2 / (1 - sigma_w**2 / 2), rel=1e-12)
    else:
        assert got.q_star == math.inf


def test_relu_edge_of_chaos():
    # σ_w² = 2, σ_b = 0: every q is a fixed point; the iteration stays at q0 = 1.
    edge = OrderChaos(1.0, (2**0.5) ** 2 / 2, Phase.EDGE_OF_CHAOS)  # χ_1 = 1 + 2e-16
    assert order_chaos("relu", 2**0.5, 0.0) == edge
    # σ_b > 0 on the boundary: q grows by σ_b² per layer forever.
    assert order_chaos("relu", 2**0.5, 0.1).q_star == math.inf


def test_identity_exact():
    assert order_chaos("identity", 0.5, 1.0) == OrderChaos(4 / 3, 0.25, Phase.ORDERED)
    assert order_chaos("identity", 1.0, 0.1) == OrderChaos(math.inf, 1.0, Phase.EDGE_OF_CHAOS)
    assert order_chaos("identity", 1.5, 0.0) == OrderChaos(math.inf, 2.25, Phase.CHAOTIC)


def test_erf_edge_is_at_sigma_w_squared_pi_over_4():
    # erf(√q z)² ≈ (4/π) q z² for small q and E[erf(√q z)²] = (2/π) arcsin(2q/(1 + 2q))
    # < 4q/π for q > 0: with σ_b = 0, q* = 0 iff σ_w² ≤ π/4, where χ_1 = σ_w² erf'(0)² =
    # σ_w² · 4/π. Rounding of √(π/4)² and the closed form: 1e-15.
    edge = order_chaos("erf", math.sqrt(math.pi / 4), 0.0)
    assert edge.q_star == 0.0 and edge.phase is Phase.EDGE_OF_CHAOS
    assert edge.chi_1 == pytest.approx(1.0, abs=1e-15)
    below = order_chaos("erf", 0.8, 0.0)
    assert below.q_star == 0.0 and below.chi_1 == pytest.approx(0.64 * 4 / math.pi, rel=1e-15)
    assert below.phase is Phase.ORDERED
    above = order_chaos("erf", 1.0, 0.0)  # q = 0 turns unstable: q* > 0, still chaotic
    assert above.q_star > 0 and above.phase is Phase.CHAOTIC


def test_tanh_edge_passes_through_one_zero():
    # tanh'(0) = 1: with σ_b = 0, q* = 0 for σ_w ≤ 1 and χ_1 = σ_w² there.
    assert order_chaos("tanh", 1.0, 0.0) == OrderChaos(0.0, 1.0, Phase.EDGE_OF_CHAOS)
    assert order_chaos("tanh", 0.9, 0.0).phase is Phase.ORDERED
    assert order_chaos("tanh", 1.1, 0.0).phase is Phase.CHAOTIC


@pytest.mark.parametrize("sigma_b", [0.05, 0.3])
def test_tanh_edge_is_a_curve_to_larger_sigma_w(sigma_b):
    def gap(sigma_w: float) -> float:
        return order_chaos("tanh", sigma_w, sigma_b).chi_1 - 1

    edge = brentq(gap, 1.0, 3.0, xtol=1e-12)
    assert edge > 1.0
    assert order_chaos("tanh", edge, sigma_b).phase is Phase.EDGE_OF_CHAOS
    assert order_chaos("tanh", edge * 0.99, sigma_b).phase is Phase.ORDERED
    assert order_chaos("tanh", edge * 1.01, sigma_b).phase is Phase.CHAOTIC
    assert abs(gap(edge)) < EDGE_TOLERANCE


def test_unbounded_growth_gives_infinite_q_star():
    # gelu ≈ relu for large q: σ_w² > 2 diverges; χ_1 → σ_w²/2 (evaluated at q = 1e15,
    # where E[gelu'(√q z)²] − 1/2 = O(q^{-1/2}) ~ 1e-8).
    got = order_chaos("gelu", 2.0, 0.1)
    assert got.q_star == math.inf and got.chi_1 == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize(("name", "tol"), [("erf", 1e-10), ("tanh", 1e-8)])
def test_deep_nngp_diagonal_reaches_q_star(name, tol):
    # Σ^{L+1}(x, x) iterates the same map, contracting towards q* (here with factor ≤ 0.7
    # per layer): after 100 layers it sits on q* up to the duals' accuracy: exact for erf
    # (1e-10 covers rounding), ≤ 1e-9 per layer for tanh's Mehler series (dual.py), which
    # the contraction (factor ≤ 0.7) accumulates to ≤ 1e-9 / 0.3 < 1e-8.
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nngp, _ = infinite_kernels(
        x, depth=100, activation=name, sigma_w=1.5, sigma_b=0.3, diagonal=True
    )
    torch.testing.assert_close(
        nngp, torch.full_like(nngp, order_chaos(name, 1.5, 0.3).q_star), rtol=tol, atol=0
    )


def test_result_is_frozen_and_phase_is_a_string():
    got = order_chaos("relu", 1.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.q_star = 2.0  # type: ignore[misc]
    assert got.phase == "ordered" and Phase("edge_of_chaos") is Phase.EDGE_OF_CHAOS


@pytest.mark.parametrize(
    ("args", "error", "argument"),
    [
        (("relu", -1.0, 0.0), ValueError, "sigma_w"),
        (("relu", 1.0, -0.1), ValueError, "sigma_b"),
        (("relu", "1", 0.0), TypeError, "sigma_w"),
        (("relu", 1.0, True), TypeError, "sigma_b"),
        (("relu", math.inf, 0.0), ValueError, "sigma_w"),
        (("swish", 1.0, 0.0), ValueError, "activation"),
    ],
)
def test_bad_input_names_the_argument(args, error, argument):
    with pytest.raises(error, match=rf"^{argument}:"):
        order_chaos(*args)
