"""A user's activation that is not finite where the numerical rules evaluate it is refused,
naming ``activation`` and where (it gave NaN or infinite kernels without a word)."""

import math

import pytest
import torch

import ntkscope as ns
from ntkscope.kernels import _series_rules as rules
from ntkscope.kernels._activation_values import evaluate
from ntkscope.kernels.order_chaos import order_chaos
from ntkscope.models import resolve_activation


def steep(u):
    """exp(50 u): overflows float64 above u = 709.78 / 50 = 14.2."""
    return torch.exp(50 * u)


def huge(u):
    """Finite (≤ 1e200), but its square overflows: E[φ²] is infinite in float64."""
    return torch.where(u > 1, 1e200, torch.tanh(u))


NOT_FINITE = pytest.mark.parametrize(
    ("activation", "message"),
    [
        (torch.sqrt, r"activation: sqrt returns nan at pre-activations below 0 \(first at -"),
        (torch.log, r"activation: log returns nan at pre-activations below 0 \(first at -"),
        (steep, r"activation: steep returns inf at pre-activations ≥ 14\.2 \(first at 14\.2"),
        (huge, r"activation: E\[huge\(u\)²\] overflows float64 at the variance q = "),
    ],
)


@NOT_FINITE
def test_infinite_kernels_refuse_an_activation_that_is_not_finite(activation, message):
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        ns.infinite_kernels(x, depth=2, activation=activation)
    with pytest.raises(ValueError, match=message):
        ns.infinite_cnn_kernels(x.reshape(6, 1, 3, 1), depth=1, activation=activation)


@NOT_FINITE
def test_infinite_width_of_a_model_refuses_it(activation, message):
    """Its own variances: steep's E[φ²] may overflow (above u = 7.1) before φ itself does."""
    model = ns.models.mlp(3, 16, 2, 1, activation=activation, seed=0).double()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    either = rf"{message}|activation: E\[{activation.__name__}\(u\)²\] overflows"
    with pytest.raises(ValueError, match=either):
        ns.infinite_width(model)(x)


@pytest.mark.parametrize("activation", [torch.sqrt, torch.log, steep])
def test_order_chaos_refuses_it(activation):
    name = activation.__name__  # steep: E[φ²] overflows (above u = 7.1) before φ does
    with pytest.raises(ValueError, match=rf"activation: .*{name}.* (returns|overflows)"):
        order_chaos(activation, 1.0, 0.1)


@pytest.mark.parametrize("rule", [rules.line, rules.plane])
def test_the_one_and_two_dimensional_rules_refuse_it(rule):
    """The rules for |ρ| = 1 and for uncertified entries evaluate φ on their own nodes."""
    q, rho = torch.tensor([1.0, 4.0], dtype=torch.float64), torch.tensor([1.0, -0.999999])
    with pytest.raises(ValueError, match="activation: sqrt returns nan at pre-activations below"):
        rule(resolve_activation(torch.sqrt), q, q, rho.double())


@pytest.mark.parametrize(
    ("fn", "where"),
    [
        (lambda u: torch.full_like(u, math.nan), "nan at every pre-activation (tried: [-3, 3])"),
        (lambda u: u / torch.zeros_like(u), "nan and inf and -inf at every pre-activation"),
        (lambda u: 1 / (u - 3), "inf at pre-activations ≥ 3 (first at 3; tried: [-3, 3])"),
        (
            lambda u: torch.where(u.abs() > 2, -math.inf, u),
            "-inf at pre-activations outside [-2, 2] (first at -3; tried: [-3, 3])",
        ),
        (
            lambda u: torch.where(u.abs() == 1, math.nan, u),
            "nan at pre-activations in [-1, 1] (2 of the 7 tried) (first at -1; tried: [-3, 3])",
        ),
    ],
)
def test_the_message_says_where(fn, where):
    """All of the points, above a threshold, outside an interval, scattered; the kinds."""
    u = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    with pytest.raises(ValueError) as error:
        evaluate(resolve_activation(fn), u)
    assert where in str(error.value), str(error.value)


def test_builtin_and_finite_user_activations_pass():
    """Built-ins are not checked (no cost); a finite callable gives the kernels as before."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    builtin = ns.infinite_kernels(x, depth=2, activation="tanh")
    user = ns.infinite_kernels(x, depth=2, activation=lambda u: torch.tanh(u))
    for a, b in zip(builtin, user, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=0)  # the series' stated error
