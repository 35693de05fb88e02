"""`jacobian_change` and `JacobianRecorder` against explicit Jacobians in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ntkscope as ns
from ntkscope.dynamics import JacobianRecorder, jacobian_change
from reference import explicit_jacobian

TOL = 1e-12
"""On the squared change: it is tr J_tJ_tᵀ + tr J_0J_0ᵀ − 2 tr J_tJ_0ᵀ over tr J_0J_0ᵀ, sums
of at most a few hundred float64 products of size ~1, so rounding leaves ~1e-14 absolute
(the change itself is then resolved down to ~1e-7, e.g. a linear model's exact 0)."""


def perturbed(model, scale, seed):
    g = torch.Generator().manual_seed(seed)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return reference


def explicit_change(model, x, reference):
    now = explicit_jacobian(model, x)
    current = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(reference[n])
    before = explicit_jacobian(model, x)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(current[n])
    return float(torch.linalg.norm(now - before) / torch.linalg.norm(before))


@settings(max_examples=30)
@given(
    n=st.integers(1, 5),
    width=st.integers(1, 6),
    depth=st.integers(0, 2),
    n_out=st.integers(1, 3),
    scale=st.floats(0.05, 1.0),
    seed=st.integers(0, 100),
)
def test_structured_change_equals_explicit_jacobians(n, width, depth, n_out, scale, seed):
    model = ns.models.mlp(3, width, depth, n_out, sigma_b=0.4, seed=seed).double()
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    reference = perturbed(model, scale, seed)
    expected = explicit_change(model, x, reference) ** 2
    assert abs(jacobian_change(model, x, reference) ** 2 - expected) < TOL
    assert abs(jacobian_change(model, x, reference, memory_budget=1) ** 2 - expected) < TOL


def test_generic_model_and_convolutions_equal_explicit_jacobians():
    """A layer called twice is outside the structured method (per-example Jacobians); a CNN
    uses it."""
    torch.manual_seed(0)
    twice = nn.Linear(5, 5)
    generic = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), twice, nn.Tanh(), twice, nn.Linear(5, 2))
    generic = generic.double()
    x = torch.randn(4, 3, dtype=torch.float64)
    cnn = ns.models.cnn(1, 3, 2, 2, seed=0).double()
    images = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for model, inputs in ((generic, x), (cnn, images)):
        reference = perturbed(model, 0.3, 1)
        expected = explicit_change(model, inputs, reference) ** 2
        assert abs(jacobian_change(model, inputs, reference) ** 2 - expected) < TOL


def test_recorder_starts_at_zero_and_grows_in_training():
    data = ns.data.load("gaussian", 16, dtype=torch.float64, d=4)
    model = ns.models.mlp(4, 8, 1, 1, seed=0).double()
    trajectory = ns.train(model, data, lr=0.5, steps=10, recorders=[JacobianRecorder(every=5)])
    steps, values = trajectory.series("jacobian_change")
    assert steps == [0, 5, 10] and values[0] == 0.0 and 0 < values[1] < values[2]


def test_reference_errors_name_reference():
    model = ns.models.mlp(3, 4, 1, 1, seed=0).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    name = next(iter(reference))
    with pytest.raises(ValueError, match=rf"reference: '{name}' must be a tensor of shape"):
        jacobian_change(model, x, {**reference, name: reference[name].reshape(-1)})
    with pytest.raises(ValueError, match="reference: expected a value for every"):
        jacobian_change(model, x, {name: reference[name]})


def test_zero_reference_jacobian_is_a_value_error():
    """A bias-free linear model on zero inputs has J = x = 0 at any parameters."""
    model = nn.Linear(3, 2, bias=False).double()
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"reference: the Jacobian at the reference .* is zero"):
        jacobian_change(model, torch.zeros(4, 3, dtype=torch.float64), reference)
