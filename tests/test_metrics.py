"""`ntkscope.metrics` against direct NumPy formulas (float64: agreement to 1e-12, rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ntkscope import metrics

TOL = 1e-12  # float64 sums of ≤ 100 terms of order 1


def gram(seed: int, n: int = 6) -> torch.Tensor:
    a = torch.randn(n, 3 * n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T


@given(st.integers(0, 10**6))
def test_distances_match_their_formulas(seed):
    a, b = gram(seed), gram(seed + 1)
    an, bn = a.numpy(), b.numpy()
    assert metrics.relative_distance(a, b) == pytest.approx(
        np.linalg.norm(an - bn) / np.linalg.norm(bn), rel=TOL
    )
    cosine = (an * bn).sum() / (np.linalg.norm(an) * np.linalg.norm(bn))
    assert metrics.kernel_distance(a, b) == pytest.approx(1 - cosine, abs=TOL)
    assert metrics.kernel_distance(a, 3.0 * a) == pytest.approx(0.0, abs=TOL)
    assert metrics.rmse(a, b) == pytest.approx(np.sqrt(((an - bn) ** 2).mean()), rel=TOL)


def test_centered_alignment_matches_its_formula_and_is_one_on_the_target_gram():
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0, 2]), 3).double()
    assert metrics.centered_alignment(y @ y.T * 5.0, y) == pytest.approx(1.0, abs=TOL)
    k = gram(3)
    h = np.eye(6) - 1 / 6
    kc, tc = h @ k.numpy() @ h, h @ (y @ y.T).numpy() @ h
    expected = (kc * tc).sum() / (np.linalg.norm(kc) * np.linalg.norm(tc))
    assert metrics.centered_alignment(k, y) == pytest.approx(expected, rel=TOL)


def test_seed_dispersion_is_the_mean_relative_deviation_from_the_seed_mean():
    kernels = [gram(s) for s in range(4)]
    stack = np.stack([k.numpy() for k in kernels])
    mean = stack.mean(0)
    expected = np.mean([np.linalg.norm(k - mean) / np.linalg.norm(mean) for k in stack])
    assert metrics.seed_dispersion(kernels) == pytest.approx(expected, rel=TOL)
    assert metrics.seed_dispersion([kernels[0]] * 3) == pytest.approx(0.0, abs=TOL)


def test_bad_shapes_name_the_arguments():
    with pytest.raises(ValueError, match="a, b: expected equal shapes"):
        metrics.relative_distance(gram(0, 3), gram(0, 4))
    with pytest.raises(ValueError, match="kernel, y"):
        metrics.centered_alignment(gram(0, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="kernels: expected at least 2"):
        metrics.seed_dispersion([gram(0)])


def test_scalar_kernel_and_spectrum_of_a_full_kernel():
    """The trace kernel is the mean of the O diagonal output blocks; the spectrum of a full
    kernel is that of the (N·O, N·O) matrix over (example, output) pairs (float64, 1e-12)."""
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(5, 3, 20, generator=g, dtype=torch.float64)  # (N, O, P)
    full = torch.einsum("nap,mbp->nmab", jac, jac)
    expected_trace = sum(jac[:, o] @ jac[:, o].T for o in range(3)) / 3
    assert torch.allclose(metrics.scalar_kernel(full), expected_trace, rtol=TOL, atol=TOL)
    flat = jac.reshape(15, 20)
    expected = torch.linalg.eigvalsh(flat @ flat.T).flip(0)
    assert torch.allclose(metrics.spectrum(full), expected, rtol=1e-10, atol=1e-10)


def test_classification_error_reads_signs_and_argmax():
    one = torch.tensor([[0.3], [-0.2], [1.0], [-4.0]])
    assert metrics.classification_error(one, torch.tensor([1, 0, 0, 0])) == 0.25
    many = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]])
    assert metrics.classification_error(many, torch.tensor([1, 2])) == 0.5
    with pytest.raises(ValueError, match="outputs, labels"):
        metrics.classification_error(many, torch.tensor([1, 2, 0]))


def test_power_law_recovers_a_known_exponent_with_a_covering_interval():
    n = np.array([16, 32, 64, 128, 256, 512])
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(40):
        losses = 2.0 * n[:, None] ** -0.6 * np.exp(0.2 * rng.standard_normal((6, 5)))
        fit = metrics.fit_power_law(n, losses, n_boot=500, seed=int(rng.integers(1000)))
        assert fit.low <= fit.exponent <= fit.high
        hits += fit.low <= 0.6 <= fit.high
    # a 95% interval (percentile bootstrap over 5 seeds, slightly narrow) covers the truth
    # in about 90% of 40 trials; 30 is more than 3 binomial sd below 36.
    assert hits >= 30
    exact = metrics.fit_power_law(n, 3.0 * n**-0.75)
    assert exact.exponent == pytest.approx(0.75, abs=1e-12) and exact.low == exact.high
    assert np.exp(exact.intercept) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize(
    ("n", "losses", "message"),
    [
        ([1, 2, 3], [1.0, 0.5, 0.3], "n: expected at least 4"),
        ([1, 2, 3, 4], [[1.0], [0.5]], "losses: expected"),
        ([1, 2, 3, 4], [1.0, 0.5, 0.0, 0.2], "losses: expected finite positive"),
    ],
)
def test_power_law_rejects_bad_input(n, losses, message):
    with pytest.raises(ValueError, match=message):
        metrics.fit_power_law(n, losses)
