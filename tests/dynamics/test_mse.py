"""`predict_mse` and `kernel_regression` against real gradient descent and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

import ntkscope as ns
from ntkscope.dynamics import kernel_regression, predict_mse, stability_limit


def linear_problem(n_out: int, seed: int = 0):
    """A depth-0 (linear) float64 model: its eNTK is exact and constant during training."""
    g = torch.Generator().manual_seed(seed)
    x, x_test = torch.randn(12, 5, generator=g).double(), torch.randn(4, 5, generator=g).double()
    y = torch.randn(12, n_out, generator=g).double()
    model = ns.models.mlp(5, 1, 0, n_out, sigma_b=0.5, seed=seed).double()
    return model, x, x_test, y


@pytest.mark.parametrize("mode", ["trace", "full"])
@pytest.mark.parametrize("n_out", [1, 3])
def test_discrete_prediction_reproduces_gradient_descent_of_a_linear_model(mode, n_out):
    """A linear model trained by GD on ½‖f − Y‖²/N follows f ← f − (η/N) Θ (f − Y) exactly,
    so predictions and real training agree to float64 rounding (1e-10 relative) at every
    step; the test NTK is the same scalar kernel ⊗ I_O, so trace mode holds too."""
    model, x, x_test, y = linear_problem(n_out)
    lr, steps = 0.5, 25
    k = ns.empirical_ntk(model, x, mode=mode)
    ks = ns.empirical_ntk(model, x_test, x, mode=mode)
    with torch.no_grad():
        f0, f0s = model(x), model(x_test)
    prediction = predict_mse(k, ks, y, f0, f0s, t=range(steps + 1), lr=lr, discrete=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps + 1):
        with torch.no_grad():
            for got, real in (
                (prediction.train[step], model(x)),
                (prediction.test[step], model(x_test)),
            ):
                assert torch.linalg.norm(got - real) <= 1e-10 * torch.linalg.norm(real)
        optimizer.zero_grad()
        (0.5 * (model(x) - y).pow(2).sum() / len(x)).backward()
        optimizer.step()


def test_infinite_time_is_kernel_regression():
    """t = ∞ gives f0 + Θ*Θ⁻¹(Y − f0) exactly; a large finite t approaches it (the slowest
    mode decays as exp(−ηλ_min t/N), < 1e-12 at the time chosen)."""
    g = torch.Generator().manual_seed(1)
    x, xs, y = torch.randn(10, 3, generator=g), torch.randn(5, 3, generator=g), torch.randn(10, 2)
    _, ntk = ns.infinite_kernels(torch.cat([x, xs]), depth=2)
    k, ks = ntk[:10, :10], ntk[10:, :10]
    zeros_train, zeros_test = torch.zeros(10, 2), torch.zeros(5, 2)
    expected = kernel_regression(k, ks, y)
    manual = ks @ torch.linalg.solve(k, y.double())
    assert torch.allclose(expected, manual, rtol=1e-9, atol=1e-12)
    late = 40 * len(x) / float(torch.linalg.eigvalsh(k)[0])
    at = predict_mse(k, ks, y, zeros_train, zeros_test, t=[math.inf, late], lr=1.0)
    assert torch.allclose(at.test[0], expected, rtol=1e-9, atol=1e-12)
    assert torch.allclose(at.test[1], expected, rtol=1e-9, atol=1e-10)
    assert torch.allclose(at.train[0], y.double(), atol=1e-8)  # interpolation


def test_gradient_flow_solves_the_linear_ode():
    """d f/dt = −(η/N) Θ (f − Y): compare with a fine explicit-Euler integration (step 1e-3,
    first-order error ~ step · ‖Θ‖²/N² · t ~ 1e-4; tolerance 1e-3 relative)."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    k, y, f0 = a @ a.T / 6, torch.randn(6, 1, dtype=torch.float64), torch.zeros(6, 1)
    f, dt = f0.double().clone(), 1e-3
    for _ in range(2000):
        f = f - dt * (0.5 / 6) * k @ (f - y)
    got = predict_mse(k, k, y, f0, f0, t=2.0, lr=0.5).train[0]
    assert torch.linalg.norm(got - f) <= 1e-3 * torch.linalg.norm(f)


def test_bad_arguments():
    k, y = torch.eye(3), torch.zeros(3, 1)
    with pytest.raises(ValueError, match="lr: expected a positive"):
        predict_mse(k, k, y, y, y, t=1.0, lr=0.0)
    with pytest.raises(ValueError, match="t: expected times >= 0"):
        predict_mse(k, k, y, y, y, t=-1.0, lr=1.0)
    with pytest.raises(ValueError, match="kernel_train: expected"):
        predict_mse(torch.ones(3, 2), k, y, y, y, t=1.0, lr=1.0)
    with pytest.raises(ValueError, match=r"y: expected \(3,\) or \(3, O\)"):
        kernel_regression(k, k, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="kernel_test_train: expected"):
        kernel_regression(k, torch.ones(2, 4), y)
    with pytest.raises(ValueError, match=r"kernel_test_train: expected \(M, 3, 2, 2\)"):
        kernel_regression(torch.ones(3, 3, 2, 2), torch.ones(2, 3, 1, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="y: contains NaN"):
        kernel_regression(k, k, torch.full((3, 1), math.nan))


def test_shape_errors_name_the_argument_that_is_wrong():
    """Regression (issue 18, defect 3): raw reshape errors, a transposed K_test blamed on
    f0, a self-contradicting message for a full kernel, with y of another width."""
    k, ks, y = torch.eye(4), torch.ones(2, 4), torch.zeros(4, 2)
    f0, f0s = torch.zeros(4, 2), torch.zeros(2, 2)
    cases = [
        ((k, ks, torch.zeros(3, 2), f0, f0s), r"^y: expected \(4,\) or \(4, O\) like"),
        ((torch.ones(4, 3), ks, y, f0, f0s), r"^kernel_train: expected \(N, N\)"),
        ((k, ks.T, y, f0, f0s), r"^kernel_test_train: expected \(M, 4\), got \(4, 2\)"),
        ((k, ks, y, f0[:3], f0s), r"^f0_train: expected \(4, 2\), got \(3, 2\)"),
        ((torch.eye(8).reshape(4, 2, 4, 2).permute(0, 2, 1, 3), torch.ones(2, 4, 2, 2),
          y[:, :1], f0[:, :1], f0s[:, :1]),
         r"^y: expected \(4, 2\), one target per output of the full kernel_train"),
    ]  # fmt: skip
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            predict_mse(*arguments, t=1.0, lr=1.0)
        if not message.startswith("^f0"):
            with pytest.raises(ValueError, match=message):
                kernel_regression(*arguments[:3])


def test_a_non_symmetric_kernel_is_refused():
    """Asymmetry above SYMMETRY_TOLERANCE (1e-5 of max|K|) is refused; float32 rounding of
    a symmetric kernel (1e-7 relative) is accepted."""
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    k, y = g @ g.T, torch.zeros(5, 1)
    kernel_regression(k.float() + 1e-7 * torch.triu(k.abs().max() * torch.ones(5, 5)), k, y)
    with pytest.raises(
        ValueError, match=r"kernel_train: expected a symmetric .*\(tolerance 1e-05\)"
    ):
        kernel_regression(k + 1e-3 * torch.triu(k.abs().max() * torch.ones(5, 5)), k, y)


def test_unstable_gradient_descent_is_refused_with_its_limit():
    """Gradient descent with ηλ_max/N >= 2 used to return NaN or overflow silently."""
    k, y = torch.diag(torch.tensor([4.0, 1.0])), torch.ones(2, 1)
    limit = 2 * 2 / 4.0  # 2N / λ_max
    predict_mse(k, k, y, 0 * y, 0 * y, t=[10.0], lr=0.99 * limit, discrete=True)
    with pytest.raises(ValueError, match=r"lr: gradient descent diverges for lr >= 2N/λ_max = 1"):
        predict_mse(k, k, y, 0 * y, 0 * y, t=[10.0], lr=1.01 * limit, discrete=True)
    predict_mse(k, k, y, 0 * y, 0 * y, t=[10.0], lr=1.01 * limit)  # gradient flow: any lr


def test_stability_limit_of_a_full_kernel():
    """2N/λ_max of the (N·O × N·O) matrix, here N = 2, blocks diag(3, 1) and diag(1, 1)."""
    blocks = torch.zeros(2, 2, 2, 2)
    blocks[0, 0], blocks[1, 1] = torch.diag(torch.tensor([3.0, 1.0])), torch.eye(2)
    assert stability_limit(blocks) == pytest.approx(2 * 2 / 3.0, rel=1e-12)
