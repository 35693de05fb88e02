"""The linearized network against the network it linearizes."""

from __future__ import annotations

import torch

import ntkscope as ns
from ntkscope.dynamics import linearize
from reference import relative_error


def test_equal_at_initialization_and_second_order_away_from_it():
    """f_lin(θ0) = f(θ0) exactly; f(θ0 + εd) − f_lin(θ0 + εd) = O(ε²) (Taylor), so halving ε
    divides the gap by 4: measured ratio within [3.5, 4.5] (third-order terms ~ε/ε0)."""
    model = ns.models.mlp(4, 16, 2, 3, activation="tanh", seed=0).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    lin = linearize(model)
    with torch.no_grad():
        assert torch.equal(lin(x), model(x))
    direction = [torch.randn_like(p) for p in model.parameters()]
    gaps = []
    for eps in (1e-2, 5e-3):
        moved = ns.models.mlp(4, 16, 2, 3, activation="tanh", seed=0).double()
        with torch.no_grad():
            for p, q, d in zip(moved.parameters(), lin.linear_parameters, direction, strict=True):
                p.add_(eps * d)
                q.copy_(p)
            gaps.append(float(torch.linalg.norm(moved(x) - lin(x))))
    assert 3.5 <= gaps[0] / gaps[1] <= 4.5


def test_linearized_entk_is_the_initial_entk_and_stays_fixed():
    """Θ̂ of f_lin (generic method, autograd through the jvp) equals Θ̂ of f at θ0 to float64
    rounding (1e-10), before and after training the linearized model."""
    model = ns.models.mlp(3, 8, 2, 2, seed=1).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    expected = ns.empirical_ntk(model, x, mode="full")
    lin = linearize(model)
    assert relative_error(ns.empirical_ntk(lin, x, mode="full"), expected) <= 1e-10
    optimizer = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        lin(x).pow(2).sum().backward()
        optimizer.step()
    assert relative_error(ns.empirical_ntk(lin, x, mode="full"), expected) <= 1e-10


def test_a_linear_model_is_its_own_linearization_during_training():
    """Depth 0: f is linear in θ, so f and f_lin trained by the same SGD stay equal (1e-12)."""
    model = ns.models.mlp(3, 1, 0, 2, sigma_b=0.3, seed=2).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    lin = linearize(model)
    opt_f = torch.optim.SGD(model.parameters(), lr=0.3)
    opt_l = torch.optim.SGD(lin.parameters(), lr=0.3)
    for _ in range(10):
        for opt, net in ((opt_f, model), (opt_l, lin)):
            opt.zero_grad()
            (0.5 * (net(x) - y).pow(2).sum() / len(x)).backward()
            opt.step()
    with torch.no_grad():
        assert relative_error(lin(x), model(x)) <= 1e-12
