import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkscope import infinite_kernels
from ntkscope.data import load
from ntkscope.dynamics import KernelRidge, kernel_regression, select_ridge


def _problem(n=40, m=15, outputs=3, seed=0):
    x = load("gaussian", n + m, seed=seed, d=8, dtype=torch.float64).x
    _, k = infinite_kernels(x, depth=2)
    y = torch.randn(n, outputs, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return k[:n, :n], k[n:, :n], y


@given(ridge=st.floats(1e-3, 10.0), outputs=st.integers(1, 4), seed=st.integers(0, 100))
def test_prediction_equals_an_explicit_solve(ridge, outputs, seed):
    k, ks, y = _problem(outputs=outputs, seed=seed)
    expected = ks.numpy() @ np.linalg.solve(k.numpy() + ridge * np.eye(len(k)), y.numpy())
    model = KernelRidge(k, y)
    # float64 solves of a system with condition number < 1e6 here: 1e-8 relative is ample.
    np.testing.assert_allclose(model.predict(ks, ridge), expected, rtol=1e-8, atol=1e-10)
    path = model.path(ks, [0.5 * ridge, ridge])
    np.testing.assert_allclose(path[1], expected, rtol=1e-8, atol=1e-10)


def test_ridgeless_equals_gradient_flow_limit_even_when_singular():
    k, ks, y = _problem()
    low_rank = k[:, :5] @ k[:5, :] / k.diagonal().mean()  # rank 5 of 40: Cholesky fails
    cross = ks[:, :5] @ k[:5, :] / k.diagonal().mean()
    model = KernelRidge(low_rank, y)
    # pseudo-inverse in both: the values are O(1), rounding of eigh at most ~1e-10
    torch.testing.assert_close(
        model.predict(cross), kernel_regression(low_rank, cross, y), rtol=1e-7, atol=1e-8
    )
    torch.testing.assert_close(model.predict(ks[:0]), torch.zeros(0, 3, dtype=torch.float64))


def test_a_factorization_is_reused_across_calls():
    k, _, y = _problem()
    model = KernelRidge(k, y)
    first = model.weights(0.1)
    assert model.weights(0.1) is first and len(model._weights) == 1


def test_select_ridge_picks_the_best_validation_error():
    k, ks, y = _problem(n=40, m=15, outputs=1)
    y_val = torch.randn(15, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    model = KernelRidge(k, y)
    ridge, errors = select_ridge(model, ks, y_val, relative_ridges=[1e-3, 1e-1, 10.0])
    candidates = [0.0] + [r * model.scale for r in (1e-3, 1e-1, 10.0)]
    direct = [float((model.predict(ks, c) - y_val).square().mean()) for c in candidates]
    np.testing.assert_allclose(errors, direct, rtol=1e-8)
    assert ridge == candidates[int(np.argmin(direct))]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda k, ks, y: KernelRidge(k[:, :3], y), "kernel_train: expected a square"),
        (lambda k, ks, y: KernelRidge(k, y[:3]), "y: expected"),
        (lambda k, ks, y: KernelRidge(k * float("nan"), y), "kernel_train"),
        (lambda k, ks, y: KernelRidge(k, y).predict(ks[:, :3]), "kernel_test_train"),
        (lambda k, ks, y: KernelRidge(k, y).predict(ks, -1.0), "ridge"),
        (lambda k, ks, y: select_ridge(KernelRidge(k, y), ks, y[:15], [0.0]), "relative_ridges"),
        (lambda k, ks, y: select_ridge(KernelRidge(k, y), ks, y[:4]), "y_val"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    k, ks, y = _problem()
    with pytest.raises((ValueError, TypeError), match=message):
        call(k, ks, y)


def test_a_large_grid_shares_one_eigendecomposition_with_the_same_answers():
    from ntkscope.dynamics.ridge import EIGH_GRID

    k, ks, y = _problem()
    grid = np.geomspace(1e-4, 10.0, EIGH_GRID).tolist()
    model = KernelRidge(k, y)
    shared = model.path(ks, grid)
    assert model._eigen is not None and not model._weights  # no Cholesky was needed
    each = torch.stack([KernelRidge(k, y).predict(ks, r) for r in grid])
    # the same systems solved two ways (condition numbers < 1e7 here): 1e-8 relative
    torch.testing.assert_close(shared, each, rtol=1e-8, atol=1e-10)
