"""`gauss_newton_step`, the Gauss–Newton optimizer of `train` and its kernel-regime prediction,
against explicit Jacobians built by autograd in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ntkscope as ns
from ntkscope.dynamics import LinearizedRecorder, gauss_newton_step, predict_gauss_newton
from reference import explicit_jacobian

TOL = 1e-10
"""float64: the step is a Cholesky solve of a system of at most 15 unknowns with condition
number below ~1e4 here, so rounding stays near 1e-12 relative; 1e-10 leaves 100× room."""


def problem(n, d, width, depth, n_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, n_out, generator=g, dtype=torch.float64)
    model = ns.models.mlp(d, width, depth, n_out, sigma_b=0.5, seed=seed).double()
    return model, x, y


def flat(delta, model) -> torch.Tensor:
    return torch.cat([delta[n].reshape(-1) for n, _ in model.named_parameters()])


def residual(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return (model(x) - y).reshape(-1)


@given(
    n=st.integers(1, 5),
    d=st.integers(1, 4),
    width=st.integers(1, 6),
    depth=st.integers(0, 2),
    n_out=st.integers(1, 3),
    damping=st.floats(1e-2, 10.0),
    lr=st.floats(0.1, 2.0),
    seed=st.integers(0, 100),
)
def test_step_is_the_explicit_damped_jacobian_formula(n, d, width, depth, n_out, damping, lr, seed):
    model, x, y = problem(n, d, width, depth, n_out, seed)
    j, r = explicit_jacobian(model, x), residual(model, x, y)
    kernel = j @ j.T
    expected = -lr * j.T @ torch.linalg.solve(kernel + damping * torch.eye(len(j)).double(), r)
    step = gauss_newton_step(model, x, y, damping=damping, lr=lr)
    scale = max(expected.abs().max().item(), 1.0)
    assert torch.allclose(flat(step.delta, model), expected, rtol=0, atol=TOL * scale)
    assert torch.allclose(step.kernel, kernel, rtol=0, atol=TOL * kernel.abs().max())
    assert torch.equal(step.residual.reshape(-1), r)


@pytest.mark.parametrize(("n", "n_out", "seed"), [(2, 1, 0), (3, 2, 1), (5, 1, 2), (2, 3, 3)])
def test_vanishing_damping_gives_the_pseudo_inverse_step(n, n_out, seed):
    """N·O ≤ P: Jᵀ(JJᵀ + λI)⁻¹ r → J⁺ r with error O(λ / σ_min(J)²); σ_min² > 1e-2 in these
    cases, so λ = 1e-14 leaves 1e-12, below the 1e-10 tolerance."""
    model, x, y = problem(n, 4, 6, 1, n_out, seed)
    j, r = explicit_jacobian(model, x), residual(model, x, y)
    assert j.shape[0] <= j.shape[1] and torch.linalg.svdvals(j)[-1] ** 2 > 1e-2
    step = gauss_newton_step(model, x, y, damping=1e-14)
    assert torch.allclose(flat(step.delta, model), -torch.linalg.pinv(j) @ r, rtol=0, atol=TOL)


@given(
    n=st.integers(1, 6), extra=st.integers(0, 4), n_out=st.integers(1, 2), seed=st.integers(0, 50)
)
def test_one_undamped_step_solves_least_squares_of_a_linear_model(n, extra, n_out, seed):
    """A linear model with P = (d + 1)·O ≥ N·O parameters interpolates: one full step
    (η = 1, λ = 1e-12) leaves a train residual of O(λ/σ_min²) ≈ 0 (1e-8 relative)."""
    model, x, y = problem(n, n + extra, 1, 0, n_out, seed)
    step = gauss_newton_step(model, x, y, damping=1e-12)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(step.delta[name])
    assert residual(model, x, y).norm() <= 1e-8 * max(y.norm().item(), 1.0)


@pytest.mark.parametrize(("damping", "lr"), [(0.1, 1.0), (2.0, 0.5), (0.5, 1.5)])
def test_training_a_linear_model_follows_the_prediction(damping, lr):
    """A linear model's Jacobian is constant, so (I − ηΘ(Θ + λI)⁻¹)^t r_0 is exact: the
    losses of `train` with optimizer="gauss_newton" agree to float64 rounding (1e-10)."""
    model, x, y = problem(12, 5, 1, 0, 2)
    kernel = ns.empirical_ntk(model, x, mode="full")
    r0 = residual(model, x, y).reshape(y.shape)
    trajectory = ns.train(model, (x, y), optimizer="gauss_newton", lr=lr, damping=damping, steps=6)
    predicted = predict_gauss_newton(kernel, r0, range(6), damping=damping, lr=lr)
    losses = 0.5 * predicted.pow(2).sum(dim=(1, 2)) / len(x)
    assert trajectory.losses == pytest.approx(losses.tolist(), rel=TOL)


def test_linearized_network_follows_the_prediction():
    """GN on the linearized network (trained alongside by `LinearizedRecorder`) is exactly the
    fixed-kernel recursion; the network itself departs from it (a narrow ReLU MLP)."""
    model, x, y = problem(8, 3, 16, 2, 2)
    kernel = ns.empirical_ntk(model, x, mode="full")
    r0 = residual(model, x, y).reshape(y.shape)
    trajectory = ns.train(model, (x, y), optimizer="gauss_newton", lr=1.0, damping=0.3, steps=4,
                          recorders=[LinearizedRecorder(every=1)])  # fmt: skip
    predicted = predict_gauss_newton(kernel, r0, range(5), damping=0.3)
    losses = 0.5 * predicted.pow(2).sum(dim=(1, 2)) / len(x)
    assert trajectory.series("linear_train_loss")[1] == pytest.approx(losses.tolist(), rel=TOL)
    assert trajectory.losses[1:] != pytest.approx(losses[1:4].tolist(), rel=1e-3)


@pytest.mark.parametrize("damping", [0.0, -1.0])
def test_damping_must_be_positive(damping):
    model, x, y = problem(3, 2, 4, 1, 1)
    with pytest.raises(ValueError, match="damping: expected > 0"):
        gauss_newton_step(model, x, y, damping=damping)
    with pytest.raises(ValueError, match="damping: expected > 0"):
        ns.train(model, (x, y), optimizer="gauss_newton", lr=1.0, damping=damping, steps=1)
    with pytest.raises(ValueError, match="damping: expected > 0"):
        predict_gauss_newton(torch.eye(3).double(), y, 1, damping=damping)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_size": 2}, "full batches"),
        ({"momentum": 0.5}, "no momentum"),
        ({"damping": None}, "damping: expected > 0"),
    ],
)
def test_gauss_newton_needs_mse_full_batch_and_damping(options, match):
    model, x, y = problem(4, 2, 4, 1, 1)
    kwargs = {"optimizer": "gauss_newton", "lr": 1.0, "damping": 0.1, "steps": 1} | options
    with pytest.raises(ValueError, match=match):
        ns.train(model, (x, y), **kwargs)


def test_cross_entropy_and_damping_for_sgd_are_refused():
    model, x, _ = problem(4, 2, 4, 1, 2)
    labels = torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="loss='mse'"):
        ns.train(model, (x, labels), loss="cross_entropy", optimizer="gauss_newton", lr=1.0,
                 damping=0.1, steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="damping: only for optimizer='gauss_newton'"):
        ns.train(model, (x, labels), lr=1.0, damping=0.1, steps=1)


def test_targets_must_match_outputs():
    model, x, y = problem(3, 2, 4, 1, 2)
    with pytest.raises(ValueError, match="y: expected"):
        gauss_newton_step(model, x, y[:, :1], damping=0.1)


def test_targets_of_the_right_size_but_another_shape_are_refused():
    """A (2, 4) y has the numel of (4, 2) outputs, but reshaping it would mix examples and
    outputs; only (N, O), or (N,) for O = 1, is accepted."""
    model, x, y = problem(4, 2, 4, 1, 2)
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 2\) .*got \(2, 4\)"):
        gauss_newton_step(model, x, y.reshape(2, 4), damping=0.1)
    model, x, y = problem(4, 2, 4, 1, 1)
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 1\) or \(4,\)"):
        gauss_newton_step(model, x, y.reshape(1, 4), damping=0.1)
    vector = gauss_newton_step(model, x, y[:, 0], damping=0.1).delta
    column = gauss_newton_step(model, x, y, damping=0.1).delta
    assert all(torch.equal(vector[name], column[name]) for name in column)


def test_damping_too_small_for_a_rank_deficient_kernel():
    """N·O = 20 examples and P = 13 parameters: J Jᵀ has 7 zero eigenvalues, which the
    float32 eNTK rounds to about ±1e-7, far beyond λ = 1e-12, so J Jᵀ + λ I is not positive
    definite (a raw Cholesky error before the fix)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 2, generator=g), torch.randn(20, 1, generator=g)
    model = ns.models.mlp(2, 3, 1, 1, sigma_b=0.5, seed=0)
    with pytest.raises(ValueError, match=r"damping: 1e-12 is too small .*smallest eigenvalue"):
        gauss_newton_step(model, x, y, damping=1e-12)


def test_inputs_with_the_wrong_feature_count_name_x():
    model, _, y = problem(3, 2, 4, 1, 1)
    with pytest.raises(ValueError, match=r"x: the model cannot be applied to inputs of shape"):
        gauss_newton_step(model, torch.zeros(3, 5, dtype=torch.float64), y, damping=0.1)


class _TokenModel(torch.nn.Module):
    """Embedding, mean over positions, Linear: a model of token ids, called as model(ids)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(7, 3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(1))


@pytest.mark.parametrize("kind", ["ids", "dict"])
def test_step_of_a_token_model_is_the_explicit_formula(kind):
    """Token ids (a tensor, and a mapping called as model(**x)) flow through the step like
    float inputs: the same formula from the brute-force Jacobian (one backward pass per
    example and output, float64)."""
    from reference import brute_force_jacobian

    torch.manual_seed(0)
    model = _TokenModel().double()
    ids = torch.randint(0, 7, (4, 5), generator=torch.Generator().manual_seed(1))
    x = ids if kind == "ids" else {"ids": ids}
    y = torch.randn(4, 2, dtype=torch.float64)
    j = brute_force_jacobian(model, x).reshape(8, -1)
    with torch.no_grad():
        r = (model(ids) - y).reshape(-1)
    expected = -0.5 * j.T @ torch.linalg.solve(j @ j.T + 0.1 * torch.eye(8).double(), r)
    step = gauss_newton_step(model, x, y, damping=0.1, lr=0.5)
    assert torch.allclose(flat(step.delta, model), expected, rtol=0, atol=TOL)
