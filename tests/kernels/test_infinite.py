"""Infinite-width kernels against a naive float64 recursion integrated by scipy.

The reference runs the recursion of docs/conventions.md entry by entry, with every Gaussian
expectation computed by adaptive quadrature (scipy.integrate.nquad, kinks of ReLU given as
break points) on scalar transcriptions of the activations, independent of the package's
activation table and of its autograd derivatives.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.integrate import nquad, quad

from ntkscope.kernels import infinite
from ntkscope.kernels.dual import RELU_THETA_SNAP, dual, dual_diagonal
from ntkscope.kernels.infinite import infinite_kernels
from reference import SCALAR, TORCH, relative_error

# Reference integrals on [−12, 12] (Gaussian tail beyond: 2e-33): kernels to ~1e-10
# relative (QUAD, 100× below the tightest kernel tolerance), single duals to ~1e-13 (TIGHT).
LIMIT = 12.0
QUAD = {"epsabs": 1e-12, "epsrel": 1e-10, "limit": 200}
TIGHT = {"epsabs": 1e-15, "epsrel": 1e-13, "limit": 200}
# Closed forms (ReLU, erf, identity) differ from the reference only by rounding and the
# reference's quadrature error: 1e-8 relative leaves a wide margin over both (~1e-10).
EXACT_TOL = 1e-8


def _pdf(z: float) -> float:
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def gaussian_expectation(f, g, q1: float, q2: float, c: float, opts=QUAD) -> float:
    """E[f(u) g(v)], (u, v) ~ N(0, [[q1, c], [c, q2]]), u = √q1 z1, v = a z1 + b z2."""
    s1, rho = math.sqrt(q1), c / math.sqrt(q1 * q2)
    a, b = math.sqrt(q2) * rho, math.sqrt(q2 * (1 - rho * rho))

    def inner_opts(z1: float) -> dict:
        return {**opts, "points": [-a * z1 / b]}  # v = 0 there (nquad drops it if outside)

    value, _ = nquad(
        lambda z2, z1: f(s1 * z1) * g(a * z1 + b * z2) * _pdf(z1) * _pdf(z2),
        [[-LIMIT, LIMIT], [-LIMIT, LIMIT]],
        opts=[inner_opts, {**opts, "points": [0.0]}],
    )
    return value


def gaussian_square(f, q: float, opts=QUAD) -> float:
    """E[f(√q z)²], z ~ N(0, 1)."""
    return quad(lambda z: f(math.sqrt(q) * z) ** 2 * _pdf(z), -LIMIT, LIMIT, points=[0.0], **opts)[
        0
    ]


@functools.cache
def reference_kernels(name: str, x: tuple, depth: int, sigma_w: float, sigma_b: float):
    """(Σ^{L+1}, Θ^{L+1}) by the recursion of docs/conventions.md, one entry at a time."""
    phi, dphi = SCALAR[name]
    x = np.array(x)
    nngp = sigma_w**2 * x @ x.T / x.shape[1] + sigma_b**2
    ntk = nngp.copy()
    for _ in range(depth):
        e_ff, e_dd = np.empty_like(nngp), np.empty_like(nngp)
        for i in range(len(x)):
            for j in range(i, len(x)):
                if i == j:
                    e_ff[i, i] = gaussian_square(phi, nngp[i, i])
                    e_dd[i, i] = gaussian_square(dphi, nngp[i, i])
                else:
                    args = nngp[i, i], nngp[j, j], nngp[i, j]
                    e_ff[i, j] = e_ff[j, i] = gaussian_expectation(phi, phi, *args)
                    e_dd[i, j] = e_dd[j, i] = gaussian_expectation(dphi, dphi, *args)
        nngp = sigma_w**2 * e_ff + sigma_b**2
        ntk = nngp + ntk * sigma_w**2 * e_dd
    return torch.from_numpy(nngp), torch.from_numpy(ntk)


def inputs(n: int = 4, d: int = 3, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=generator, dtype=torch.float64)


def assert_matches_reference(name, x, depth, sigma_w, sigma_b, tol, **kwargs):
    expected = reference_kernels(name, tuple(map(tuple, x.tolist())), depth, sigma_w, sigma_b)
    got = infinite_kernels(
        x,
        depth=depth,
        activation=TORCH.get(name, name),
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        **kwargs,
    )
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.float64
        assert relative_error(g, e) <= tol, relative_error(g, e)


@pytest.mark.parametrize(
    ("name", "depth", "sigma_w", "sigma_b"),
    [
        ("relu", 1, 1.5, 0.0),
        ("relu", 2, 2**0.5, 0.3),
        ("erf", 2, 1.2, 0.2),
        ("identity", 1, 0.9, 0.5),
    ],
)
def test_closed_forms_match_reference(name, depth, sigma_w, sigma_b):
    assert_matches_reference(name, inputs(), depth, sigma_w, sigma_b, EXACT_TOL)


# Numerical duals (Mehler series): ≤ 1e-9 per expectation relative to the Cauchy–Schwarz
# scale (dual.py, test_dual.py), so the 2-layer kernels match the reference as closely as
# the closed forms do. "sin" is a user callable (autograd derivative, numerical dual).
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "sin"])
def test_numerical_duals_match_reference(name):
    assert_matches_reference(name, inputs(scale=0.6), 2, 1.0, 0.3, EXACT_TOL)


@pytest.mark.parametrize("name", ["relu", "erf", "identity"])
@pytest.mark.parametrize(("q1", "q2", "rho"), [(0.5, 2.0, 0.3), (4.0, 1.0, -0.8), (1.0, 1.0, 1.0)])
def test_dual_closed_forms(name, q1, q2, rho):
    # Closed forms against nquad (1e-10: the reference converges to ~1e-13); ρ = 1 against
    # the 1-D diagonal reference through dual_diagonal's closed form.
    phi, dphi = SCALAR[name]
    if rho == 1:
        expected = [gaussian_square(f, q1, TIGHT) for f in (phi, dphi)]
        got = dual_diagonal(name, torch.tensor(q1, dtype=torch.float64))
    else:
        c = rho * math.sqrt(q1 * q2)
        expected = [gaussian_expectation(f, f, q1, q2, c, TIGHT) for f in (phi, dphi)]
        got = dual(name, *torch.tensor([q1, q2, c], dtype=torch.float64))
    for g, e in zip(got, expected, strict=True):
        assert g.item() == pytest.approx(e, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize(("sigma_w", "sigma_b"), [(1.2, 0.4), (1.7, 0.1), (2.5, 0.0)])
def test_relu_diagonal_recursion(sigma_w, sigma_b):
    # ReLU halves the second moment: q_{l+1} = σ_w² q_l / 2 + σ_b², and E[φ'²] = 1/2 gives
    # Θ_{l+1} = q_{l+1} + Θ_l σ_w² / 2. A handful of roundings: 1e-13 relative.
    x = inputs(n=5, d=7)
    q = sigma_w**2 * (x * x).sum(1) / 7 + sigma_b**2
    theta = q
    for depth in range(5):
        nngp, ntk = infinite_kernels(x, depth=depth, sigma_w=sigma_w, sigma_b=sigma_b)
        torch.testing.assert_close(nngp.diagonal(), q, rtol=1e-13, atol=0)
        torch.testing.assert_close(ntk.diagonal(), theta, rtol=1e-13, atol=0)
        q = sigma_w**2 * q / 2 + sigma_b**2
        theta = q + theta * sigma_w**2 / 2


def test_relu_he_initialization_preserves_variance():
    # σ_w² = 2, σ_b = 0: q_l = 2‖x‖²/n_0 at every depth and Θ^{L+1}(x, x) = (L + 1) q.
    x = inputs(n=5, d=7)
    q = 2 * (x * x).sum(1) / 7
    for depth in range(5):
        nngp, ntk = infinite_kernels(x, depth=depth, diagonal=True)
        torch.testing.assert_close(nngp, q, rtol=1e-13, atol=0)
        torch.testing.assert_close(ntk, (depth + 1) * q, rtol=1e-13, atol=0)


def test_depth_zero_is_the_linear_kernel():
    x1, x2 = inputs(n=3, d=4), inputs(n=5, d=4, seed=1)
    nngp, ntk = infinite_kernels(x1, x2, depth=0, activation="tanh", sigma_w=0.7, sigma_b=0.2)
    torch.testing.assert_close(nngp, 0.49 * x1 @ x2.T / 4 + 0.04, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ntk, nngp, rtol=0, atol=0)


ACTIVATIONS = st.sampled_from(["relu", "erf", "identity", "tanh"])


@st.composite
def kernel_cases(draw):
    n, d = draw(st.integers(1, 7)), draw(st.integers(1, 4))
    elements = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
    return {
        "x": torch.from_numpy(draw(arrays(np.float64, (n, d), elements=elements))),
        "depth": draw(st.integers(0, 3)),
        "activation": draw(ACTIVATIONS),
        "sigma_w": draw(st.floats(0.5, 2.0)),
        "sigma_b": draw(st.floats(0.0, 1.0)),
    }


@given(kernel_cases())
def test_diagonal_equals_diagonal_of_full_kernel(case):
    # x2 = None writes the diagonal recursion onto the diagonal: bit-identical by design.
    x, kwargs = case.pop("x"), case
    full = infinite_kernels(x, **kwargs)
    diag = infinite_kernels(x, diagonal=True, **kwargs)
    for f, d in zip(full, diag, strict=True):
        assert f.shape == (len(x), len(x)) and d.shape == (len(x),)
        assert torch.equal(f.diagonal(), d)


@given(kernel_cases())
def test_symmetric_and_psd(case):
    x, kwargs = case.pop("x"), case
    for kernel in infinite_kernels(x, **kwargs):
        assert torch.equal(kernel, kernel.T)  # mirrored tiles: exactly symmetric
        eigenvalues = torch.linalg.eigvalsh(kernel)
        # ReLU: inputs at genuine angles θ < RELU_THETA_SNAP (found by hypothesis:
        # x = 1.2e-7, 0, 2e-7 with σ_b = 1) have their θ snapped to 0, which moves the
        # entries by ≤ θ/(2π) relative (dual.py), so eigenvalues by ≤ N times that
        # (Weyl); measured −8e-10 × λ_max there. tanh (numerical): ≤ 1e-9 per entry and
        # layer, N times that. Other closed forms: rounding only.
        entry = {"relu": RELU_THETA_SNAP / (2 * math.pi), "tanh": 1e-9}
        bound = max(1e-10, len(x) * entry.get(kwargs["activation"], 0.0))
        assert eigenvalues.min() >= -bound * max(eigenvalues.max().item(), 1e-300)


def test_duplicate_inputs_keep_relu_ntk_psd():
    # Found by hypothesis: rows 0 and 2 coincide, so the exact NTK is singular; without
    # RELU_THETA_SNAP, rounding put θ(x0, x2) at ~1e-8 and the smallest eigenvalue at −2e-9.
    x = torch.tensor([[-1.0], [-1.5], [-1.0]], dtype=torch.float64)
    for kernel in infinite_kernels(x, depth=2, sigma_w=1.0):
        eigenvalues = torch.linalg.eigvalsh(kernel)
        assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


def test_near_collinear_inputs_keep_relu_ntk_psd_to_the_snap_error():
    # Found by hypothesis: angles θ ≈ 1e-7 between distinct inputs straddle RELU_THETA_SNAP;
    # the eigenvalue bound is the snap's documented error, N · θ_snap / (2π) relative.
    x = torch.tensor([[1.1921e-07], [0.0], [2.0e-07]], dtype=torch.float64)
    for kernel in infinite_kernels(x, depth=1, sigma_w=2.0, sigma_b=1.0):
        eigenvalues = torch.linalg.eigvalsh(kernel)
        assert eigenvalues.min() >= -3 * RELU_THETA_SNAP / (2 * math.pi) * eigenvalues.max()


def test_tanh_kernel_psd_to_series_accuracy():
    # Series entries carry errors ≤ 1e-9 relative per layer (dual.py), so eigenvalues may
    # move by ≤ N × depth × 1e-9 λ_max (Weyl); the true kernels are PSD.
    x = inputs(n=10, d=3, scale=3.0)
    for kernel in infinite_kernels(x, depth=3, activation="tanh", sigma_b=0.2):
        eigenvalues = torch.linalg.eigvalsh(kernel)
        assert eigenvalues.min() >= -30e-9 * eigenvalues.max()


@pytest.mark.parametrize("name", ["relu", "erf", "identity", "tanh"])
def test_x2_none_equals_x2_x1(name):
    x = inputs(n=5, d=4, scale=0.8)
    # Variances ≤ 3 in layer 1, and σ_w² E[tanh²] + σ_b² < 2.01 after it.
    assert infinite_kernels(x, depth=0, sigma_b=0.1, diagonal=True)[0].max() <= 3
    same = infinite_kernels(x, depth=3, activation=name, sigma_b=0.1)
    given_x2 = infinite_kernels(x, x.clone(), depth=3, activation=name, sigma_b=0.1)
    upper = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for s, g in zip(same, given_x2, strict=True):
        # The upper triangle is computed identically (rows x, columns x): rounding only.
        torch.testing.assert_close(g[upper], s[upper], rtol=1e-12, atol=1e-14)
        # Below the diagonal x2 = x1 evaluates (x', x) where x2 = None mirrors (x, x'):
        # closed forms and the Mehler series are symmetric in (q1, q2) up to rounding (the
        # 2-D fallback rule, for large q at |ρ| ≈ 1, only to its accuracy, 1e-9).
        tol = 1e-9 if name == "tanh" else 1e-12
        torch.testing.assert_close(g.T[upper], s[upper], rtol=tol, atol=1e-14)
        # On the diagonal x2 = x1 puts c (a matmul) against q (a sum of squares): ρ = 1 up
        # to rounding, where ReLU's Σ̇ would be ill-conditioned if θ were not snapped to 0.
        torch.testing.assert_close(g.diagonal(), s.diagonal(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["relu", "tanh"])
@pytest.mark.parametrize("square", [True, False])
def test_blocked_equals_unblocked(name, square, monkeypatch):
    x1, x2 = inputs(n=6, d=3), (None if square else inputs(n=4, d=3, seed=1))
    whole = infinite_kernels(x1, x2, depth=2, activation=name, memory_budget="1GB")
    tiles = []
    tile = infinite._Recursion.tile
    monkeypatch.setattr(infinite._Recursion, "tile", lambda *a: tiles.append(1) or tile(*a))
    budget = 5 * infinite.plan(x1, x2, **{**ARGS, "depth": 2}, activation=name)[0].entry_bytes()
    blocked = infinite_kernels(x1, x2, depth=2, activation=name, memory_budget=budget)
    assert len(tiles) >= 6  # 5 entries per tile: 2×2 tiles
    for b, w in zip(blocked, whole, strict=True):
        # Same per-entry arithmetic; only the matmul of Σ¹ may round differently per tile,
        # and the series sums each entry to its batch's longest certified length, which
        # depends on the tile (truncation certified at 1e-10 per layer relative to the
        # Cauchy–Schwarz scale, at most the largest entry: 2 layers, 2e-10 of it).
        atol = 2e-10 * w.abs().max().item() if name == "tanh" else 1e-15
        torch.testing.assert_close(b, w, rtol=2e-10 if name == "tanh" else 1e-13, atol=atol)


@settings(max_examples=30, deadline=None)
@given(
    n1=st.integers(1, 30),
    n2=st.integers(0, 30),
    entries=st.integers(1, 300),
    name=st.sampled_from(["relu", "erf"]),
)
def test_tiles_of_any_shape_give_the_untiled_kernel(n1, n2, entries, name):
    """Budgets of 1 to 300 entries per tile (tiles from 1×1 to 17×17, rectangular ones for
    x2 given, and a last row and column of smaller tiles) fill the same kernel as one tile."""
    x1, x2 = inputs(n=n1, d=3), (None if n2 == 0 else inputs(n=n2, d=3, seed=1))
    whole = infinite_kernels(x1, x2, depth=3, activation=name, memory_budget="1GB")
    budget = entries * infinite.plan(x1, x2, **ARGS, activation=name)[0].entry_bytes()
    tiled = infinite_kernels(x1, x2, depth=3, activation=name, memory_budget=budget)
    for t, w in zip(tiled, whole, strict=True):
        # The same per-entry arithmetic; only Σ¹ = x·x' (a matmul of 3 features) may round
        # differently for another tile shape, by an ulp, which 3 layers of arc-cosine duals
        # amplify by ~1/θ at most (θ ≥ 1e-2 between these random points): 1e-12 relative.
        torch.testing.assert_close(t, w, rtol=1e-12, atol=1e-15)


ARGS = {"depth": 3, "sigma_w": 2**0.5, "sigma_b": 0.0, "diagonal": False, "memory_budget": None}


def test_zero_inputs_give_finite_kernels():
    x = torch.zeros(2, 3, dtype=torch.float64)
    x[1] = 1.0
    for name in ["relu", "erf", "tanh", "identity"]:
        nngp, ntk = infinite_kernels(x, depth=2, activation=name)
        assert torch.isfinite(nngp).all() and torch.isfinite(ntk).all()
        assert ntk[0].abs().max() == 0  # Θ¹ = 0 on the zero row (σ_b = 0) stays 0


def test_dtype_and_shapes():
    x1, x2 = inputs(n=3).float(), inputs(n=2, seed=1).half()
    nngp, ntk = infinite_kernels(x1, x2, depth=1)
    assert nngp.shape == ntk.shape == (3, 2) and nngp.dtype == ntk.dtype == torch.float64
    nngp, ntk = infinite_kernels(x1, depth=1, diagonal=True)
    assert nngp.shape == ntk.shape == (3,) and nngp.dtype == torch.float64


X = torch.ones(3, 2)
BAD = [
    ({"x1": torch.ones(3)}, ValueError, "x1"),
    ({"x1": torch.ones(3, 2, 1)}, ValueError, "x1"),
    ({"x1": torch.ones(0, 2)}, ValueError, "x1"),
    ({"x1": torch.ones(3, 0)}, ValueError, "x1"),
    ({"x1": torch.tensor([[1.0, float("nan")]])}, ValueError, "x1"),
    ({"x1": torch.ones(3, 2, dtype=torch.int64)}, TypeError, "x1"),
    ({"x1": [[1.0, 2.0]]}, TypeError, "x1"),
    ({"x2": torch.ones(2, 3)}, ValueError, "x2"),
    ({"x2": torch.ones(2)}, ValueError, "x2"),
    ({"x2": torch.tensor([[float("inf"), 0.0]])}, ValueError, "x2"),
    ({"x2": X, "diagonal": True}, ValueError, "x2"),
    ({"depth": -1}, ValueError, "depth"),
    ({"depth": 1.5}, TypeError, "depth"),
    ({"sigma_w": -1.0}, ValueError, "sigma_w"),
    ({"sigma_w": float("nan")}, ValueError, "sigma_w"),
    ({"sigma_w": "1"}, TypeError, "sigma_w"),
    ({"sigma_b": -0.1}, ValueError, "sigma_b"),
    ({"activation": "swish"}, ValueError, "activation"),
    ({"activation": 3}, TypeError, "activation"),
    ({"memory_budget": "lots"}, ValueError, "memory_budget"),
    ({"memory_budget": 0}, ValueError, "memory_budget"),
]


@pytest.mark.parametrize(("kwargs", "error", "argument"), BAD)
def test_bad_input_names_the_argument(kwargs, error, argument):
    kwargs = {"x1": X, "depth": 2, **kwargs}
    with pytest.raises(error, match=rf"^{argument}:"):
        infinite_kernels(kwargs.pop("x1"), kwargs.pop("x2", None), **kwargs)
