"""Features with nonzero mean in `infinite_width`: activation moments, LayerNorm/RMSNorm
of such features, sums of independent branches with means, sums a·φ(g) + b·g, and the
refusals made when the program is built.

Tolerances: the moments E[φ(u)], E[φ'(u)] against adaptive quadrature (scipy ``quad``,
split at 0 and ±1, tolerances 1e-15 absolute / 1e-14 relative): closed forms ≤ 1e-12 and
the series' a_0, d_0 ≤ 1e-9, relative to √E[φ(u)²] (√E[φ'(u)²]) as for the duals
(`ntkscope.kernels.dual`); measured ≤ 2e-14. The recursions (tests/recursions.py, with the
moments by quadrature) agree to 1e-10 relative Frobenius: the same formulas in another
order, in float64.
"""

from __future__ import annotations

import importlib
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

import ntkscope as ns
from ntkscope.models.activations import ActivationName, resolve_activation
from ntkscope.models.layers import Dense
from recursions import dense_ntk, erf_dual, inputs, relu_dual
from reference import relative_error

dual = importlib.import_module("ntkscope.kernels.dual")

RECURSION = 1e-10
VARIANCES = (1e-4, 3e-3, 0.1, 0.7, 2.0, 9.0, 35.0, 100.0)


def quad_mean(fn, q: float) -> float:
    """E[fn(√q z)], z ~ N(0, 1), by adaptive quadrature split at z = 0, ±1."""

    def density(z: float) -> float:  # quad warns of roundoff near 1e-15: below the tolerance
        value = fn(torch.tensor(math.sqrt(q) * z, dtype=torch.float64))
        return float(value) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    edges = [-np.inf, -1.0, 0.0, 1.0, np.inf]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return sum(
            integrate.quad(density, a, b, epsabs=1e-15, epsrel=1e-14, limit=200)[0]
            for a, b in itertools.pairwise(edges)
        )


def quad_means(fn, q: torch.Tensor) -> torch.Tensor:
    return torch.tensor([quad_mean(fn, float(v)) for v in q], dtype=torch.float64)


@pytest.mark.parametrize("name", [a.value for a in ActivationName])
def test_activation_moments_equal_quadrature(name):
    act, activation = dual.for_activation(name), resolve_activation(name)
    q = torch.tensor(VARIANCES, dtype=torch.float64)
    functions = (activation.fn, activation.derivative)
    for ours, fn, energy in zip(act.first_moments(q), functions, act.diagonal(q), strict=True):
        scale = energy.sqrt().clamp_min(1e-300)  # sign, step: φ' = 0
        error = float(((ours - quad_means(fn, q)).abs() / scale).max())
        assert error <= (1e-12 if act.exact else 1e-9), (fn, error)


class MeanMLP(nn.Module):
    """relu(A x) + relu(B x) → RMSNorm (γ random) → LayerNorm (no affine) → C → erf → D,
    NTK parameterization: nonzero means through a sum, an RMSNorm and a LayerNorm."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.a = Dense(d, width, sigma_w=1.3, sigma_b=0.4)
        self.b = Dense(d, width, sigma_w=0.8, sigma_b=0.2)
        self.rms = nn.RMSNorm(width, eps=0.01)
        self.ln = nn.LayerNorm(width, eps=0.02, elementwise_affine=False)
        self.c, self.d = Dense(width, width, sigma_b=0.3), Dense(width, 1, sigma_b=0.3)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.rms.weight.copy_(1 + 0.5 * torch.randn(width, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x)) + torch.relu(self.b(x))
        return self.d(torch.erf(self.c(self.ln(self.rms(h)))))


def test_norms_of_nonzero_mean_features_equal_recursion():
    x = inputs(5, 3) * torch.tensor([[0.3], [1.0], [2.0], [0.7], [1.5]], dtype=torch.float64)
    model = MeanMLP(3, 16)
    zero = torch.zeros(5, 5, dtype=torch.float64)
    k0 = x @ x.T / 3
    branches = []
    for sw2, sb2 in ((1.3**2, 0.4**2), (0.8**2, 0.2**2)):
        k, t = dense_ntk(k0, zero, sw2, sb2)
        e_ff, e_dd = relu_dual(k)
        branches.append((e_ff, t * e_dd, quad_means(torch.relu, k.diagonal())))
    (ka, ta, ma), (kb, tb, mb) = branches
    k, t, mu = ka + kb + ma[:, None] * mb[None] + mb[:, None] * ma[None], ta + tb, ma + mb
    # RMSNorm, γ trainable: ŷ = h/s keeps the mean μ/s
    gamma = model.rms.weight.detach().double()
    s = 1 / (k.diagonal() + 0.01).sqrt()
    k_hat = k * s[:, None] * s[None]
    k, t = gamma.square().mean() * k_hat, gamma.square().mean() * t * s[:, None] * s[None] + k_hat
    mu = gamma.mean() * mu * s
    # LayerNorm without affine: centred by μ, scaled by σ² = q − μ²
    s = 1 / (k.diagonal() - mu.square() + 0.02).sqrt()
    k, t = (k - mu[:, None] * mu[None]) * s[:, None] * s[None], t * s[:, None] * s[None]
    k, t = dense_ntk(k, t, 2.0, 0.09)
    e_ff, e_dd = erf_dual(k)
    nngp, ntk = dense_ntk(e_ff, t * e_dd, 2.0, 0.09)
    ours = ns.infinite_width(model)(x)
    assert relative_error(ours[0], nngp) < RECURSION
    assert relative_error(ours[1], ntk) < RECURSION


class Block(nn.Module):
    """Linear → [forward written by each case] → Linear, plain torch layers."""

    def __init__(self, forward, width: int = 6) -> None:
        super().__init__()
        self.a, self.b, self.norm = (
            nn.Linear(3, width),
            nn.Linear(width, width),
            nn.LayerNorm(width),
        )
        self.out, self.body = nn.Linear(width, 1), forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self, x))


def residual_post_norm(m, x):  # the README's diagnose example: h + gelu(W LN(h))
    h = m.a(x)
    return h + nn.functional.gelu(m.b(m.norm(h)))


def post_activation_norm(m, x):  # LayerNorm right after GELU
    return m.norm(nn.functional.gelu(m.a(x)))


@pytest.mark.parametrize("body", [residual_post_norm, post_activation_norm])
def test_independent_branches_and_post_activation_norms_are_accepted(body):
    ntk = ns.infinite_width(Block(body))(inputs(3, 3))[1]
    assert torch.isfinite(ntk).all() and (ntk.diagonal() > 0).all()


def biased_norm(m):
    with torch.no_grad():
        m.norm.bias.fill_(0.1)
    return m


@pytest.mark.parametrize(
    ("body", "prepare", "message"),
    [
        (lambda m, x: torch.relu(m.a(x)) + m.a(x), None, r"a: the layer is called more than once"),
        (lambda m, x: (lambda h: torch.relu(h) + torch.erf(h))(m.a(x)), None, r"correlated.*of a,"),
        (lambda m, x: (lambda h: m.norm(h) + h)(m.a(x)), None, r"add: .*correlated"),
        (lambda m, x: torch.tanh(torch.tanh(m.a(x))), None, r"tanh_1: .*not zero-mean Gaussian"),
        (lambda m, x: torch.relu(m.norm(m.a(x))), biased_norm, r"relu: .*not zero-mean Gaussian"),
        (lambda m, x: torch.cat([m.a(x), m.a(x)], 1)[:, :6], None, r"getitem"),
        (lambda m, x: m.a(m.norm(x)), None, r"norm: a layer with parameters before the first"),
    ],
)
def test_refusals_happen_when_the_program_is_built(body, prepare, message):
    model = Block(body)
    model = prepare(model) if prepare else model
    with pytest.raises(ns.kernels.ProgramError, match=f"{message}.*monte_carlo"):
        ns.infinite_width(model)


def test_a_sum_with_the_input_is_not_gaussian():
    class InputSum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.out = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x):
            return self.out(torch.relu(x + self.a(x)))

    with pytest.raises(ns.kernels.ProgramError, match=r"relu: .*not zero-mean Gaussian"):
        ns.infinite_width(InputSum())


class SharedSums(nn.Module):
    """s = relu(h) + 0.5·h, z = B s, out = C(z − 0.3·erf(z)): sums a·φ(g) + b·g in both
    orders and signs, NTK parameterization."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.a = Dense(d, width, sigma_w=1.2, sigma_b=0.3)
        self.b, self.c = Dense(width, width, sigma_b=0.3), Dense(width, 1, sigma_b=0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        z = self.b(torch.relu(h) + 0.5 * h)
        return self.c(z - 0.3 * torch.erf(z))


def stein(k: torch.Tensor, t: torch.Tensor, slope: torch.Tensor, c: float):
    """The cross terms c (e(x) + e(x')) K, c (e(x) + e(x')) T, e = E[φ'(u)] per input."""
    both = c * (slope[:, None] + slope[None])
    return both * k, both * t


def test_sums_of_a_branch_and_its_activation_equal_recursion():
    x = inputs(5, 3) * torch.tensor([[0.3], [1.0], [2.0], [0.7], [1.5]], dtype=torch.float64)
    zero = torch.zeros(5, 5, dtype=torch.float64)
    k, t = dense_ntk(x @ x.T / 3, zero, 1.44, 0.09)
    e_ff, e_dd = relu_dual(k)
    step = quad_means(lambda u: (u > 0).to(u.dtype), k.diagonal())  # E[relu'(u)]
    ck, ct = stein(k, t, step, 0.5)
    k, t = dense_ntk(e_ff + 0.25 * k + ck, t * e_dd + 0.25 * t + ct, 2.0, 0.09)
    e_ff, e_dd = erf_dual(k)
    slope = quad_means(lambda u: 2 / math.sqrt(math.pi) * torch.exp(-u * u), k.diagonal())
    ck, ct = stein(k, t, slope, -0.3)
    nngp, ntk = dense_ntk(k + 0.09 * e_ff + ck, t + 0.09 * t * e_dd + ct, 2.0, 0.09)
    kernel_fn = ns.infinite_width(SharedSums(3, 8))
    ours = kernel_fn(x)
    assert relative_error(ours[0], nngp) < RECURSION
    assert relative_error(ours[1], ntk) < RECURSION
    assert "sum of a·relu(g) and b·g" in kernel_fn.layers[4]
