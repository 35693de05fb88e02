"""The structured contraction forms against the per-example Jacobian Gram, over shapes.

For `Factors` (a, g), the eNTK contribution is the Gram of the per-example Jacobians
``J = Σ_p g_p ⊗ a_p``, formed explicitly here (`Factors.jacobian`, an einsum that is
obviously right). Each form computes the same sums of products in another order, so in
float64 they agree to a few roundings of the terms summed: every entry within 1e-12 of the
same sums of absolute values (`agree`; relative to the result itself, a sum that cancels to
4e-4 from terms of O(1) differed by 1.3e-12), where any wrong index (a swapped position,
output or example) changes the result by O(1).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkscope.kernels import _forms
from ntkscope.kernels._gram import gram
from ntkscope.kernels._rules import Factors

TOL = 1e-12


def agree(got: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor) -> bool:
    """Every entry of ``got`` within `TOL` of the sum of absolute terms ``scale`` of
    ``expected``'s (a bound on the rounding of any order of the same sums)."""
    return got.shape == expected.shape and bool(((got - expected).abs() <= TOL * scale).all())


def absolute(f: Factors) -> Factors:
    """The factors' absolute values: their Jacobian Gram sums the absolute terms."""
    return Factors(f.a if f.vocab is not None else f.a.abs(), f.g.abs(), f.vocab)


def random_factors(n: int, positions: int, d_a: int, n_out: int, d_g: int, seed: int, vocab):
    """Factors of n examples in float64; integer ids in [0, vocab) when vocab is set."""
    generator = torch.Generator().manual_seed(seed)
    if vocab is None:
        a = torch.randn(n, positions, d_a, generator=generator, dtype=torch.float64)
    else:
        a = torch.randint(0, vocab, (n, positions), generator=generator)
    g = torch.randn(n, n_out, d_g, positions, generator=generator, dtype=torch.float64)
    return Factors(a, g.transpose(2, 3), vocab)  # g as a conv layer's gradients lie


shapes = dict(
    n=st.integers(1, 5),
    m=st.integers(1, 4),
    positions=st.integers(1, 18),  # by columns below 16, by rows from 16
    d_a=st.integers(1, 5),
    n_out=st.integers(1, 4),
    d_g=st.integers(1, 5),
    seed=st.integers(0, 1000),
    vocab=st.sampled_from([None, 3]),
)


@settings(max_examples=40, deadline=None)
@given(**shapes)
def test_positional_form_equals_the_jacobian_gram(n, m, positions, d_a, n_out, d_g, seed, vocab):
    """Both orders of the full-mode sum (by rows, by columns; all pairs, or those on and
    above the diagonal), the dispatch between them and trace mode, for pairs and for the
    diagonal."""
    f1 = random_factors(n, positions, d_a, n_out, d_g, seed, vocab)
    f2 = random_factors(m, positions, d_a, n_out, d_g, seed + 1, vocab)
    j1, j2 = f1.jacobian(), f2.jacobian()
    a1, a2 = absolute(f1).jacobian(), absolute(f2).jacobian()
    expected, scale = gram(j1, j2, full=True), gram(a1, a2, full=True)
    upper = torch.ones(n, m, dtype=torch.bool).triu()[:, :, None, None]
    for order in (_forms.full_by_rows, _forms.full_by_columns):
        got = order(f1.inner(f2), f1.g, f2.g, upper=False)
        assert agree(got, expected, scale), order.__name__
        got = order(f1.inner(f2), f1.g, f2.g, upper=True)  # pairs j ≥ i only, the rest 0
        assert agree(got, expected * upper, scale), (order.__name__, "upper")
    for full in (True, False):
        expected, scale = gram(j1, j2, full), gram(a1, a2, full)
        assert agree(_forms.positional_pair(f1, f2, full), expected, scale), full
        diagonal = _forms.positional_diagonal(f1, full)
        expected = torch.stack([gram(j[None], j[None], full)[0, 0] for j in j1])
        scale = torch.stack([gram(j[None], j[None], full)[0, 0] for j in a1])
        assert agree(diagonal, expected, scale), (full, "diagonal")
