"""The infinite CNN's in-place piecewise-linear activation (`Dual.layer`) against its
out-of-place form (`Dual.given`), one activation and whole kernels.

Both compute ρ by the same operations, so θ and its snaps (`RELU_THETA_SNAP`) are the same;
the expectations' other terms are gathered in a different order: rounding only, a few ulps
of each entry's scale s (√(q1 q2) + Θ), s the activation's scale.
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import given
from hypothesis import strategies as st
from test_infinite_cnn import EXACT, architectures

from ntkscope.kernels import _cnn_layers
from ntkscope.kernels.dual import for_activation
from ntkscope.kernels.infinite_cnn import infinite_cnn_kernels

PIECEWISE = ["relu", "leaky_relu", "abs"]
ULPS = 1e-13
"""Per entry, relative to s (√(q1 q2) + Θ): measured ≤ 4.6e-16 over 300 draws; 1e-13 leaves
room for ρ near ±1, where the two forms' sin θ round differently."""


def out_of_place(name: str):
    """The dual of ``name`` without its in-place layer: `Dual.given` everywhere."""
    return dataclasses.replace(for_activation(name), layer=None, block=None)


@st.composite
def position_pairs(draw):
    """Σ over pairs of positions of A and B images (A, H, W, B, H, W) with its variances:
    dot products of feature vectors, some of x' equal to (or minus) some of x (ρ = ±1) or
    zero (q = 0), and a positive Θ."""
    a, b, h, w = (draw(st.integers(1, 3)) for _ in range(4))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    u = torch.randn(a * h * w, 5, generator=generator, dtype=torch.float64)
    v = torch.randn(b * h * w, 5, generator=generator, dtype=torch.float64)
    for i in draw(st.lists(st.integers(0, min(len(u), len(v)) - 1), max_size=3)):
        v[i] = u[i] * draw(st.sampled_from([1.0, -1.0, 0.0]))
    sigma = (u @ v.T).reshape(a, h, w, b, h, w)
    theta = torch.rand(sigma.shape, generator=generator, dtype=torch.float64) * 3
    q1, q2 = u.square().sum(1).reshape(a, h, w), v.square().sum(1).reshape(b, h, w)
    return sigma, theta, q1, q2


@given(position_pairs(), st.sampled_from(PIECEWISE), st.floats(1e-3, 4.0))
def test_in_place_activation_equals_the_out_of_place_one(pairs, name, scale):
    sigma, theta, q1, q2 = pairs
    kernel = _cnn_layers.Kernel(sigma, theta, same_position=False)
    sides = (_cnn_layers.side(q, scale) for q in (q1, q2))
    a, b = kernel.spread(*sides, own=False)
    got = _cnn_layers.activated(for_activation(name), sigma.clone(), theta.clone(), a, b, scale)
    expected = _cnn_layers.activated(out_of_place(name), sigma.clone(), theta.clone(), a, b, scale)
    root = (a.q * b.q).sqrt()
    for g, e in zip(got, expected, strict=True):
        assert ((g - e).abs() <= ULPS * scale * (root + theta)).all()


@given(architectures(), st.sampled_from(PIECEWISE), st.integers(1, 2**16))
def test_in_place_kernels_equal_the_out_of_place_ones(case, name, budget):
    """Whole kernels, chunked and tiled by a budget (block 0 in chunks, the later blocks in
    place), against `Dual.given` throughout: rounding only (``EXACT`` relative to the
    largest entry: leaky ReLU and abs kernels can cross zero)."""
    x = case.pop("x")
    case.pop("activation")
    got = infinite_cnn_kernels(x, activation=name, memory_budget=budget, **case)
    expected = infinite_cnn_kernels(x, activation=out_of_place(name), **case)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=EXACT, atol=EXACT * e.abs().max().item())
