"""The 1-d convolution of ntkscope (`Conv(dims=1)`, NTK parameterization): its eNTK against
the brute-force reference and its infinite-width kernels against an independent recursion.

Tolerances: 1e-10 relative Frobenius in float64. The structured eNTK sums the same products
as the reference in another order (agreement ~1e-14); the recursion (tests/recursions.py)
evaluates the same formulas on joint covariances (rounding over three layers, ~1e-15). A
wrong offset, padding or fan-in changes either by O(1).
"""

from __future__ import annotations

import pytest
import torch
from test_structured_layers import assert_structured_matches

import ntkscope as ns
from networks import NtkConv1dNet
from recursions import erf_dual, inputs, position_mean, relu_dual, same_conv_ntk
from reference import relative_error

TOL = 1e-10


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_entk_equals_the_reference(parameterization):
    torch.manual_seed(0)
    kw = dict(parameterization=parameterization, sigma_b=0.4)
    model = torch.nn.Sequential(
        ns.models.Conv(2, 3, 3, dims=1, **kw),
        ns.models.ActivationLayer("tanh"),
        ns.models.Conv(3, 2, 5, dims=1, **kw),
        torch.nn.Flatten(),
        ns.models.Dense(2 * 6, 2, **kw),
    ).double()
    assert_structured_matches(model, inputs(3, 2, 6), inputs(2, 2, 6, seed=1))


def test_infinite_width_equals_recursion():
    model = NtkConv1dNet(2, 8)
    x, n, length = inputs(3, 2, 7), 3, 7
    rows = x.permute(0, 2, 1).reshape(n * length, 2)
    k, t = rows @ rows.T / 2, torch.zeros(n * length, n * length, dtype=torch.float64)
    sw2, sb2 = 1.7, 0.09
    k, t = same_conv_ntk(k, t, n, length, 3, sw2, sb2)
    e_ff, e_dd = relu_dual(k)
    k, t = same_conv_ntk(e_ff, t * e_dd, n, length, 5, sw2, sb2)
    e_ff, e_dd = erf_dual(k)
    mean = position_mean(n, length)
    k, t = mean @ e_ff @ mean.T, mean @ (t * e_dd) @ mean.T
    nngp = sw2 * k + sb2
    kernel_fn = ns.infinite_width(model)
    ours = kernel_fn(x)
    assert relative_error(ours[0], nngp) < TOL
    assert relative_error(ours[1], nngp + sw2 * t) < TOL
    assert kernel_fn.layers[1].startswith("c1: Conv 1-d 2→8 k=3 (ntk)")


def test_dims_is_checked():
    with pytest.raises(ValueError, match="dims"):
        ns.models.Conv(2, 3, 3, dims=3)
