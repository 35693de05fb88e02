"""Dual activations against independent float64 references (tests/kernels/dual_reference.py).

The table holds E[φ(u) φ(v)] and E[φ'(u) φ'(v)] by nested adaptive quadrature (QUADPACK,
relative tolerance 1e-12) at 200 points (q1, q2, ρ): q log-uniform in [1e-4, 1e2], a third
of the ρ within 1e-7..1e-1 of ±1, and the corners q ∈ {1e-4, 1, 100} at ρ = ±1, 0.999.
Error is measured relative to the Cauchy–Schwarz scale √(E[f(u)²] E[f(v)²]) (f = φ or φ'),
which stays meaningful where the expectation crosses zero; the scale comes from the
package's diagonal (itself checked against the table's rows with q1 = q2, ρ = 1).
"""

from __future__ import annotations

import math

import dual_reference as reference
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from ntkscope.kernels import _series_dual as series
from ntkscope.kernels.dual import CLOSED_FORMS, RELU_THETA_SNAP, for_activation, spread

CLOSED_TOL = 1e-12
"""Closed forms: rounding of the formulas, and the reference's own error (~1e-13)."""
NUMERICAL_TOL = 1e-9
"""The stated bound of the Mehler series (certified 1e-10) and of its 2-D fallback rule."""


def _table(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = reference.TABLE / f"{name}.npy"
    if not path.exists():
        pytest.fail(f"missing reference {path}: run python tests/kernels/dual_reference.py {name}")
    return np.load(reference.TABLE / "points.npy"), np.load(path)


def _relative_errors(name: str, rows: np.ndarray, expected: np.ndarray) -> np.ndarray:
    dual = for_activation(name)
    q1, q2, rho = (torch.from_numpy(column.copy()) for column in rows.T)
    got = torch.stack(dual(q1, q2, rho * (q1 * q2).sqrt()), 1).numpy()
    scale = (torch.stack(dual.diagonal(q1), 1) * torch.stack(dual.diagonal(q2), 1)).sqrt()
    scale = scale.numpy()
    return np.abs(got - expected) / np.maximum(scale, 1e-300)


@pytest.mark.parametrize("name", sorted(reference.ACTIVATIONS))
def test_dual_matches_reference_table(name):
    rows, expected = _table(name)
    assert len(rows) >= 200 and rows[:, :2].max() == 100 and (np.abs(rows[:, 2]) == 1).any()
    errors = _relative_errors(name, rows, expected)
    exact = for_activation(name).exact
    assert exact == (name in CLOSED_FORMS)
    assert errors.max() <= (CLOSED_TOL if exact else NUMERICAL_TOL), errors.max(0)


@pytest.mark.parametrize(("name", "index"), [("tanh", 0), ("elu", 5), ("gelu", 12), ("mish", 40)])
def test_reference_table_regenerates(name, index):
    # A few rows recomputed live: the stored table is what the script computes. The points
    # to 1e-15: numpy's 10.0**x differs by an ulp between CPUs (its SIMD paths; 22 of 600
    # entries on one CI-class machine, relative 2e-16).
    rows, expected = _table(name)
    points = reference.points(reference.POINTS, reference.SEED)
    np.testing.assert_allclose(rows, points, rtol=1e-15, atol=0)
    live = reference.references(name, rows[index : index + 1])
    np.testing.assert_allclose(live, expected[index : index + 1], rtol=1e-13, atol=1e-16)


def test_series_uses_every_path():
    # Small ρ: a short series; ρ = 0.99 at q = 50: the 2-D rule; ρ = 1: the 1-D rule;
    # the elementwise results equal scalar calls (broadcasting keeps pairs apart) up to the
    # certified truncation error 1e-10: a batch sums each entry to its batch's longest
    # certified length, which may exceed the entry's own.
    dual = for_activation("tanh")
    q1 = torch.tensor([[0.5], [50.0]], dtype=torch.float64)
    q2 = torch.tensor([[2.0, 50.0, 3.0]], dtype=torch.float64)
    rho = torch.tensor([[0.1, 0.99, 1.0], [-0.5, 0.99, -1.0]], dtype=torch.float64)
    c = rho * (q1 * q2).sqrt()
    together = dual(q1, q2, c)
    for i in range(2):
        for j in range(3):
            alone = dual(q1[i, 0], q2[0, j], c[i, j])
            for t, a in zip(together, alone, strict=True):
                assert t[i, j].item() == pytest.approx(a.item(), rel=1e-10, abs=1e-15)


def test_tile_sums_mixed_lengths_like_single_entries():
    # A tile of 40×40 entries at small ρ and one at ρ = 0.97 (q = 2, tanh): the tile is
    # summed by Horner's rule at a short shared length and the long entry alone (its own
    # certified length), as the private planner must decide; every entry equals a call on
    # that entry alone, within the certified truncation 1e-10 of either (relative to the
    # Cauchy–Schwarz scale, ≤ 1 here: E[tanh²] < 1 and E[tanh'²] ≤ 1).
    dual = for_activation("tanh")
    gen = torch.Generator().manual_seed(3)
    q1 = 0.5 + 1.5 * torch.rand(40, 1, generator=gen, dtype=torch.float64)
    q2 = 0.5 + 1.5 * torch.rand(1, 40, generator=gen, dtype=torch.float64)
    rho = 0.2 * torch.rand(40, 40, generator=gen, dtype=torch.float64) - 0.1
    q1[7, 0], q2[0, 11], rho[7, 11] = 2.0, 2.0, 0.97
    memo = series._Memo(dual.formula.act)
    length, longer = series._plan(memo(q1), memo(q2), q1.shape, q2.shape, rho)
    assert 0 < length < series.LADDER[-1] and longer[7, 11] and longer.sum() < 40
    together = dual(q1, q2, rho * (q1 * q2).sqrt())
    rows, cols = (t.reshape(-1) for t in torch.broadcast_tensors(q1, q2))
    alone = dual(rows, cols, (rho * (q1 * q2).sqrt()).reshape(-1))
    for t, a in zip(together, alone, strict=True):
        assert (t.reshape(-1) - a).abs().max() <= 2e-10


def test_coefficients_of_held_variances_are_reused():
    # A tile's rows are a subset of the variances of all inputs, whose coefficients the
    # single-input run computed: the memo serves them (the same numbers, nothing recomputed),
    # and computes a vector with a value it does not hold. A fresh computation of the same
    # rows agrees to rounding (the rows are independent sums; 1e-15 absolute, |a_k| ≤ 2).
    act = for_activation("silu").formula.act
    memo = series._Memo(act)
    q = torch.linspace(0.5, 3.0, 50, dtype=torch.float64)
    whole = memo(q)
    whole.log_tails(16)
    rows = [7, 3, 30]
    part = memo(q[rows].reshape(3, 1))
    assert torch.equal(part.q, q[rows]) and part.tails is not None
    assert torch.equal(part.extend(16), whole.extend(16)[:, rows])
    assert torch.equal(part.energy(), whole.energy()[:, rows])
    fresh = series._Coefficients(act, q[rows].clone())
    torch.testing.assert_close(fresh.extend(16), part.extend(16), rtol=0, atol=1e-15)
    other = memo(torch.tensor([0.5, 4.0], dtype=torch.float64))
    assert other.coefficients.shape[-1] == 0  # 4.0 is not held: computed when asked for


@pytest.mark.parametrize(
    ("given", "name", "exact"),
    [
        (nn.ReLU(), "relu", True),
        (nn.GELU(), "gelu", True),
        (nn.GELU(approximate="tanh"), "GELU", False),
        (nn.Tanh(), "tanh", False),
        (nn.SiLU(), "silu", False),
        (nn.ELU(alpha=0.5), "ELU", False),
        (nn.Softplus(beta=2.0), "Softplus", False),
        (nn.LeakyReLU(0.2), "leaky_relu(0.2)", True),
        (nn.Identity(), "identity", True),
        (F.gelu, "gelu", True),
        (torch.tanh, "tanh", False),
        (torch.sin, "sin", True),
        (F.silu, "silu", False),
        ("Mish", "mish", False),
    ],
)
def test_for_activation_recognizes_torch_activations(given, name, exact):
    dual = for_activation(given)
    assert (dual.name, dual.exact) == (name, exact)
    assert for_activation(dual) is dual


def test_leaky_relu_closed_form_equals_numerical_series():
    # The closed form for any slope against the series of the same function as a callable.
    q1, q2 = torch.tensor([0.3, 4.0], dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    c = torch.tensor([0.5, -2.0], dtype=torch.float64)
    closed = for_activation(nn.LeakyReLU(0.2))(q1, q2, c)
    series = for_activation(lambda x: F.leaky_relu(x, 0.2))(q1, q2, c)
    for a, b in zip(closed, series, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


LAYER_TOL = 1e-14
"""The in-place layer against the out-of-place closed form: both round a few times each
(their operations differ in order), ~1e-16 relative to the scales below."""

_SNAP = RELU_THETA_SNAP
_RHOS = [1.0, -1.0, 0.0, *(math.cos(t) for t in (_SNAP * 0.99, _SNAP * 1.01, 3e-8, 1e-4))]
_RHOS += [-r for r in _RHOS[3:]]  # θ near π: π − θ straddles the snap too


@settings(max_examples=60, deadline=None)
@given(
    slope=st.sampled_from([0.0, 0.01, -1.0, 1.0, 0.3, -2.5]),
    n1=st.integers(1, 9),
    n2=st.integers(1, 9),
    weight_var=st.one_of(st.just(0.0), st.floats(1e-3, 4.0)),
    bias_var=st.sampled_from([0.0, 0.1, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_in_place_layer_equals_the_closed_form(slope, n1, n2, weight_var, bias_var, seed):
    """`Dual.layer` (ReLU, leaky ReLU, abs, identity as leaky ReLU of slope 1, any slope)
    against Σ^{l+1} = σ_w² E[φφ] + σ_b², Θ^{l+1} = Σ^{l+1} + σ_w² E[φ'φ'] Θ^l from
    `Dual.given`, on tiles whose ρ includes ±1, 0 and θ just either side of `THETA_SNAP`
    and of π − it (the snapped E[φ'φ'] jumps by ~3e-8, far beyond the tolerance), and zero
    variances. Tolerance `LAYER_TOL` relative to the Cauchy–Schwarz scales: σ_w² √(q1 q2)
    (1 + a²)/2 + σ_b² for Σ, plus σ_w² (1 + a²)/2 |Θ^l| for Θ."""
    dual = for_activation(nn.LeakyReLU(slope))
    g = torch.Generator().manual_seed(seed)
    q1 = torch.rand(n1, 1, generator=g, dtype=torch.float64).mul_(8).exp_().mul_(1e-2)
    q2 = torch.rand(1, n2, generator=g, dtype=torch.float64).mul_(8).exp_().mul_(1e-2)
    q1[0, 0] = 0.0 if seed % 5 == 0 else q1[0, 0]
    pick = torch.randint(2 * len(_RHOS), (n1, n2), generator=g)  # half of them special
    special = torch.tensor(_RHOS, dtype=torch.float64)[pick % len(_RHOS)]
    uniform = torch.rand(n1, n2, generator=g, dtype=torch.float64).mul_(2).sub_(1)
    rho = torch.where(pick < len(_RHOS), special, uniform)
    c = rho * (q1 * q2).sqrt()
    ntk = torch.randn(n1, n2, generator=g, dtype=torch.float64).abs_()
    a, b = spread(q1), spread(q2)
    e_ff, e_dd = dual.given(a, b, c.clone())
    nngp_expected = weight_var * e_ff + bias_var
    ntk_expected = nngp_expected + weight_var * e_dd * ntk

    root = (weight_var / (2 * math.pi)) ** 0.5
    nngp, out, theta = c.clone(), torch.empty_like(c), torch.empty_like(c)
    rows, cols = (a.inv_sqrt, q1.sqrt() * root), (b.inv_sqrt, q2.sqrt() * root)
    got = ntk.clone()
    dual.layer(nngp, got, rows, cols, weight_var, bias_var, out, theta)

    half = (1 + slope * slope) / 2
    scale = weight_var * half * (q1 * q2).sqrt() + bias_var
    assert ((out - nngp_expected).abs() <= LAYER_TOL * scale).all()
    assert ((got - ntk_expected).abs() <= LAYER_TOL * (scale + weight_var * half * ntk)).all()


def test_nngp_and_ntk_derivative_are_the_pair():
    dual = for_activation("silu")
    args = [torch.tensor(v, dtype=torch.float64) for v in (1.0, 2.0, 0.7)]
    assert dual.nngp(*args) == dual(*args)[0] and dual.ntk_derivative(*args) == dual(*args)[1]


@pytest.mark.parametrize(("bad", "error"), [("swish", ValueError), (3, TypeError)])
def test_bad_activation_names_the_argument(bad, error):
    with pytest.raises(error, match=r"^activation:"):
        for_activation(bad)
