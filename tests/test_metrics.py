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
