"""`PreparedNTK`: a plan made once gives, after the parameters change, the kernel of a fresh
`empirical_ntk`; a model whose tensors were replaced is planned (and checked) again.

Tolerance: 1e-12 relative Frobenius error in float64. A reused plan runs the same
operations as a fresh one on the same numbers, so the two agree to rounding (bitwise when
the threads sum in the same order); a plan reading stale parameters differs by the change
of the kernel, ≥ 1e-3 here (asserted, so that the comparison can fail).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkscope as ns
from ntkscope.kernels import PreparedNTK
from reference import brute_force_ntk, relative_error

TOL = 1e-12
METHODS = ["structured", "jacobian", "ntvp", "autograd", "auto"]


def cnn() -> nn.Module:
    """Convolution, BatchNorm in eval mode (buffers in the plan) and a dense read-out."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2),
    ).double()  # fmt: skip
    with torch.no_grad():  # running statistics other than 0 and 1
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def mlp() -> nn.Module:
    return ns.models.mlp(4, 16, 2, 3, sigma_b=0.3, seed=0).double()


def train(model: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    """Optimizer steps in place (SGD, large enough to move the kernel)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()


def inputs(model: nn.Module) -> torch.Tensor:
    shape = (6, 2, 4, 4) if isinstance(model[0], nn.Conv2d) else (6, 4)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make", [mlp, cnn])
@pytest.mark.parametrize("mode", ["trace", "full"])
def test_a_reused_plan_follows_optimizer_steps_and_load_state_dict(method, make, mode):
    model = make()
    x = inputs(model)
    prepared = PreparedNTK(model, x, mode=mode, method=method)
    plan, k0 = prepared._plan, prepared()
    if make is cnn:
        model.train()  # BatchNorm's running statistics move in place too
    train(model, x)
    model.eval()
    k1 = prepared()
    assert relative_error(k1, k0) > 1e-3  # the kernel moved: stale parameters would show
    assert relative_error(k1, ns.empirical_ntk(model, x, mode=mode, method=method)) <= TOL
    assert relative_error(k1, brute_force_ntk(model, x, mode=mode)) <= 1e-10  # test_empirical
    model.load_state_dict(make().state_dict())  # back to the initial values, in place
    assert relative_error(prepared(), k0) <= TOL
    assert prepared._plan is plan  # nothing was planned again


def test_replaced_or_frozen_parameters_are_planned_again():
    model = mlp()
    x = inputs(model)
    prepared = PreparedNTK(model, x)
    k0 = prepared()
    changes = [
        lambda: setattr(model[0], "weight", nn.Parameter(2 * model[0].weight.detach())),
        lambda: setattr(model[0].bias, "data", model[0].bias.detach() + 1.0),
        lambda: model[0].requires_grad_(False),
    ]
    for change in changes:
        plan = prepared._plan
        change()
        k = prepared()
        assert prepared._plan is not plan
        assert relative_error(k, k0) > 1e-3
        assert relative_error(k, ns.empirical_ntk(model, x)) <= TOL
        k0 = k


def test_a_model_converted_or_put_in_training_mode_is_refused_at_the_call():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    x = torch.randn(5, 4)
    prepared = PreparedNTK(model, x)
    model.train()
    with pytest.raises(ValueError, match=r"model: layer .1. .*training mode"):
        prepared()
    model.eval().double()  # new float64 tensors: planned again, and the probe is float32
    with pytest.raises((TypeError, ValueError), match="x1"):
        prepared()


def test_a_call_with_inputs_is_refused_naming_progress():
    """`PreparedNTK` computes on the inputs it was prepared with: a batch passed to the call
    lands in ``progress`` and is refused there, with the reason, not deep in the tiling."""
    model = ns.models.mlp(3, 8, 1, 2, seed=0).eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    prepared = ns.kernels.PreparedNTK(model.double(), x)
    with pytest.raises(TypeError, match=r"progress: .*callable.*got Tensor.*when it was prepared"):
        prepared(x)
    with pytest.raises(TypeError, match=r"progress: .*got int$"):
        prepared(3)
