"""The linearized network against the network it linearizes."""

from __future__ import annotations

import copy

import pytest
import torch

import ntkscope as ns
from ntkscope.dynamics import linearize
from ntkscope.dynamics.linearize import PRODUCTS
from reference import brute_force_jacobian, relative_error


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


class _TokenLSTM(torch.nn.Module):
    def __init__(self, sparse: bool = False):
        super().__init__()
        self.embed = torch.nn.Embedding(9, 4, sparse=sparse)
        self.lstm = torch.nn.LSTM(4, 5, batch_first=True)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, ids):
        return self.head(self.lstm(self.embed(ids))[0][:, -1])


def _moved(lin, scale=0.1):
    with torch.no_grad():
        for q in lin.linear_parameters:
            q.add_(scale * torch.randn_like(q))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse-embedding"])
@pytest.mark.parametrize("product", ["double-vjp", "autograd"])
def test_fallback_products_equal_forward_mode(product, sparse):
    """Where forward-mode AD works (LSTM in float64), J·δ by the double-VJP or by explicit
    per-example Jacobians equals jvp's, and so do the gradients in θ, to float64 rounding
    (1e-12: the same sums of products in another order); also with an embedding of sparse
    gradient (``nn.Embedding(sparse=True)``)."""
    torch.manual_seed(0)
    model = _TokenLSTM(sparse).double()
    x = torch.randint(0, 9, (4, 6))
    lin, twin = linearize(model), linearize(model)
    _moved(lin)
    with torch.no_grad():
        for q, r in zip(lin.linear_parameters, twin.linear_parameters, strict=True):
            r.copy_(q)
    twin.product = product
    a, b = lin(x), twin(x)
    assert lin.product == "jvp" and twin.product == product
    assert relative_error(b, a) <= 1e-12
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    for q, r in zip(lin.linear_parameters, twin.linear_parameters, strict=True):
        assert relative_error(r.grad, q.grad) <= 1e-12


def test_linearize_without_forward_mode_ad():
    """LSTM in float32 has no forward-mode rule: the linearization falls back to the
    double-VJP and matches the float64 one to float32 rounding (1e-5)."""
    torch.manual_seed(0)
    model = _TokenLSTM()
    x = torch.randint(0, 9, (4, 6))
    lin = linearize(model)
    _moved(lin)
    out = lin(x)
    assert lin.product == "double-vjp"
    wide = linearize(model.double())
    with torch.no_grad():
        for q, r in zip(lin.linear_parameters, wide.linear_parameters, strict=True):
            r.copy_(q)
    assert relative_error(out.double(), wide(x)) <= 1e-5


def _sgd_steps(model, x, steps=5, lr=0.5):
    """Full-batch SGD on ½‖f(x)‖²/N: moves every parameter of ``model``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * model(x).pow(2).sum() / len(x)).backward()
        optimizer.step()


def _taylor(at_start, x, theta):
    """f(x; θ_0) + J(θ_0)(θ − θ_0) from brute-force Jacobians of a copy kept at θ_0."""
    theta0 = torch.cat([p.detach().reshape(-1) for p in at_start.parameters()])
    change = brute_force_jacobian(at_start, x) @ (
        torch.cat([t.reshape(-1) for t in theta]) - theta0
    )
    with torch.no_grad():
        return at_start(x) + change


@pytest.mark.parametrize("product", PRODUCTS)
def test_every_product_differentiates_at_theta0_while_the_model_trains(product):
    """Training the network moves its parameters, not the linearization point: after SGD on
    the model and a move of θ, f_lin(θ) by each product equals f(θ_0) + J(θ_0)(θ − θ_0)
    from brute-force Jacobians of a copy kept at θ_0, to float64 rounding (1e-12). The
    Jacobian at the trained parameters differs from J(θ_0) by more than 1e-2 (so a product
    taken at the live parameters fails)."""
    torch.manual_seed(0)
    model = _TokenLSTM().double()
    x = torch.randint(0, 9, (4, 6))
    at_start, lin = copy.deepcopy(model), linearize(model)
    lin.product = product
    _sgd_steps(model, x)
    assert relative_error(brute_force_jacobian(model, x), brute_force_jacobian(at_start, x)) > 1e-2
    _moved(lin)
    with torch.no_grad():
        out = lin(x)
    assert lin.product == product
    assert relative_error(out, _taylor(at_start, x, lin.linear_parameters)) <= 1e-12


class _Encoder(torch.nn.Module):
    """Fused attention in float64: no forward-mode AD, no double backward on CPU."""

    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


def test_linearized_recorder_follows_the_predicted_dynamics_on_the_autograd_product():
    """Full-batch GD with MSE on f_lin is the discrete dynamics `PredictionRecorder`
    predicts with the full eNTK at θ_0: the two training losses agree to float64 rounding
    (1e-9 relative: 8 steps of N·O-sized sums) on an encoder whose linearization takes the
    autograd product, while the network's own loss departs from them. lr = 0.4 is below
    the full kernel's stability limit 2N/λ_max ≈ 0.475 (above it the prediction is inf)."""
    torch.manual_seed(0)
    model = _Encoder().double().eval()
    x, y = torch.randn(12, 3, 8, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    lin = ns.LinearizedRecorder(x)
    recorders = [ns.LossRecorder(1), lin, ns.PredictionRecorder(1, mode="full")]
    run = ns.train(model, (x, y), loss="mse", optimizer="sgd", lr=0.4, steps=8, recorders=recorders)
    frame = run.frame()
    linear, predicted = (
        torch.tensor(frame[c].to_numpy()) for c in ("linear_train_loss", "predicted_train_loss")
    )
    assert lin.linear.product == "autograd"
    assert relative_error(linear, predicted) <= 1e-9
    assert relative_error(torch.tensor(frame["train_loss"].to_numpy()), predicted) > 1e-6
