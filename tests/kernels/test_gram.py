"""The Gram products every eNTK method ends with, in both layouts of the factors, against
an explicit einsum in float64.

Tolerance 1e-12 relative: the same products summed in another order, float64. The float32
accuracy of products with few columns is checked against float64 at 1e-6 (below).
"""

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ntkscope.kernels import _gram
from ntkscope.kernels._gram import gram, gram_diagonal, output_major, product, symmetric_sum

RTOL = 1e-12


def _factors(n: int, n_out: int, d: int, major: bool, seed: int) -> torch.Tensor:
    g = torch.randn(n_out, n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return g.transpose(0, 1) if major else g.transpose(0, 1).contiguous()


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().clamp_min(1.0)
    assert (actual - expected).abs().max() <= RTOL * scale


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    m=st.integers(1, 9),
    n_out=st.integers(1, 6),
    d=st.integers(1, 7),
    majors=st.tuples(st.booleans(), st.booleans()),
    full=st.booleans(),
)
def test_gram_in_either_layout_is_the_einsum(n, m, n_out, d, majors, full):
    g1, g2 = _factors(n, n_out, d, majors[0], 0), _factors(m, n_out, d, majors[1], 1)
    expected = torch.einsum("nod,mpd->nmop", g1, g2)
    if not full:
        expected = expected.diagonal(dim1=2, dim2=3).sum(-1)
    _close(gram(g1, g2, full), expected)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    n_out=st.integers(1, 7),
    ds=st.lists(st.integers(1, 6), min_size=0, max_size=3),
    weighted=st.lists(st.booleans(), min_size=3, max_size=3),
    majors=st.lists(st.booleans(), min_size=3, max_size=3),
    identity=st.booleans(),
)
def test_symmetric_sum_is_the_weighted_einsum_and_exactly_symmetric(
    n, n_out, ds, weighted, majors, identity
):
    """Also with identity factors (a readout layer's), whose weight enters the blocks o = o'."""
    assume(ds or identity)
    terms, expected = [], 0
    for k, d in enumerate(ds):
        g = _factors(n, n_out, d, majors[k], k)
        w = None
        if weighted[k]:
            a = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
            w = a @ a.T  # symmetric, as every a·a' Gram is
        gg = torch.einsum("nod,mpd->nmop", g, g)
        expected = expected + (gg if w is None else gg * w[:, :, None, None])
        terms.append((w, g))
    if identity:  # a readout layer's output gradients: its weight on the blocks o = o' only
        b = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        w = b @ b.T  # symmetric to rounding: the result is made exactly symmetric
        eye = torch.eye(n_out, dtype=torch.float64)
        expected = expected + w[:, :, None, None] * eye
        terms.append((w, eye.expand(n, n_out, n_out)))
    out = symmetric_sum(terms)
    _close(out, expected)
    assert torch.equal(out, out.transpose(0, 1).transpose(2, 3))


def test_output_major_is_the_layout_of_a_vectorized_backward_pass():
    g = torch.zeros(4, 3, 5)  # (O, n, D)
    assert output_major(g.transpose(0, 1))
    assert not output_major(g.transpose(0, 1).contiguous())
    assert not output_major(torch.zeros(1, 3, 5).transpose(0, 1))  # both layouts at once


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    m=st.integers(1, 20),
    k=st.integers(1, 30),
    batch=st.sampled_from([(), (3,)]),
    into=st.booleans(),
)
def test_a_product_by_chunks_of_the_inner_dimension_is_the_whole_product(n, m, k, batch, into):
    g = torch.Generator().manual_seed(k)
    a = torch.randn(*batch, n, k, dtype=torch.float64, generator=g)
    b = torch.randn(*batch, m, k, dtype=torch.float64, generator=g)
    start = torch.randn(*batch, n, m, dtype=torch.float64, generator=g)
    expected = a @ b.mT + (start if into else 0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_gram, "INNER_CHUNK", 4)  # chunks of 4 whenever m < FEW_COLUMNS
        _close(product(a, b, start.clone() if into else None), expected)


def test_few_column_gram_products_keep_float32_accuracy():
    """Inner dimension 2^18 (a 64-channel 3×3 convolution's Jacobian has 36,864 columns
    per output, 368,640 over 10 outputs in trace mode), 4 columns: one BLAS call on uniform
    data is 3.6e-6 off float64, by chunks 2.9e-7; tolerance 1e-6."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(8, 1, 2**18, dtype=torch.float64, generator=g)
    b = torch.rand(4, 1, 2**18, dtype=torch.float64, generator=g)
    pairs = a[:, 0] @ b[:, 0].T
    own = (a * a).sum(-1, keepdim=True)  # each example with itself, full mode: (n, 1, 1)
    for actual, expected in (
        (gram(a.float(), b.float(), full=False), pairs),
        (gram(a.float(), b.float(), full=True)[:, :, 0, 0], pairs),
        (gram_diagonal(a.float(), full=True), own),
    ):
        error = (actual.double() - expected).abs().max() / expected.abs().max()
        assert error <= 1e-6
