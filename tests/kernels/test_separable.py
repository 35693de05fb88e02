"""Layers whose output gradients separate over the outputs (`_separable`).

The factorization g[n, o, p, d] = w[o, d] s[n, p, d] is checked directly (`separate`), and
the kernels of models that use it against the brute-force reference (float64, 1e-10
relative Frobenius as in `test_structured_layers`: the same sums in another order agree
to ~1e-14, a wrong channel weight or moment changes the kernel by O(1)).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_structured_layers import ResNet, assert_structured_matches, randomize
from torch import nn

from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._separable import Separable, diagonal, pair, separate
from ntkscope.kernels._structured import StructuredStrategy
from reference import relative_error


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    n_out=st.integers(1, 5),
    positions=st.integers(1, 6),
    channels=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_separate_recovers_a_separable_gradient(n, n_out, positions, channels, dtype, seed):
    """w ⊗ s with ReLU-like zeros in s and one all-zero channel: reproduced to a few
    epsilons of the gradients' norm (the residual `separate` accepts)."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, channels, generator=generator, dtype=dtype)
    s = torch.randn(n, positions, channels, generator=generator, dtype=dtype).relu()
    s[..., 0] = 0
    g = w[None, :, None, :] * s[:, None]
    parts = separate(g)
    assert parts is not None
    w2, s2 = parts
    again = w2[None, :, None, :] * s2[:, None]
    eps = torch.finfo(dtype).eps
    assert float((again - g).norm()) <= 8 * eps * max(float(g.norm()), 1e-30)


def test_separate_refuses_gradients_of_rank_two():
    """Two outputs whose gradients at two positions are not proportional: None, even when
    the difference is 1e-4 of the gradients (far above float32's rounding)."""
    g = torch.ones(1, 2, 2, 1)
    g[0, 1, 1, 0] += 1e-4
    assert separate(g) is None
    assert separate(torch.ones(1, 2, 2, 1)) is not None


def _term(n: int, seed: int, separable: bool):
    from ntkscope.kernels._rules import Factors

    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 5, 3, generator=generator, dtype=torch.float64)
    w = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    s = torch.randn(n, 5, 2, generator=generator, dtype=torch.float64)
    g = w[None, :, None, :] * s[:, None]
    if not separable:
        g = g + 0.1 * torch.randn(g.shape, generator=generator, dtype=torch.float64)
    return Factors(a, g)


def test_pairs_of_factorized_and_unfactorized_terms_are_their_jacobians_gram():
    """Every combination of a separated term and one kept as its Jacobian, in full and
    trace mode, and the diagonal: Σ J J'ᵀ of the per-example Jacobians (1e-12)."""
    terms = [_term(3, 0, True), _term(2, 1, True), _term(2, 2, False)]
    made = [Separable.of(t) for t in terms]
    assert [m.split for m in made] == [True, True, False]
    for t1, m1 in zip(terms, made, strict=True):
        own = torch.einsum("nak,nbk->nab", t1.jacobian(), t1.jacobian())
        assert relative_error(diagonal(m1, True), own) < 1e-12
        assert relative_error(diagonal(m1, False), own.diagonal(0, 1, 2).sum(-1)) < 1e-12
        for t2, m2 in zip(terms, made, strict=True):
            full = torch.einsum("nak,mbk->nmab", t1.jacobian(), t2.jacobian())
            assert relative_error(pair(m1, m2, True), full) < 1e-12
            assert relative_error(pair(m1, m2, False), full.diagonal(0, 2, 3).sum(-1)) < 1e-12


def test_the_layers_before_a_pooled_readout_are_separable():
    """In the test ResNet the strided conv (through its BatchNorm, the residual sum and
    ReLU) and the 1×1 shortcut reach the outputs through per-channel operations, mean
    pooling and the readout: separable; the earlier layers mix channels on the way."""
    model = randomize(ResNet())
    strategy = StructuredStrategy(FunctionalModel(model), 3, full=True)
    strategy.measure(torch.randn(3, 3, 6, 6, dtype=torch.float64))
    labels = {label for label, _ in strategy.separable_terms}
    assert labels == {"layer 'down.0' (Conv2d)", "layer 'shortcut' (Conv2d)"}


class _SwitchedMixing(nn.Module):
    """A conv, ReLU, mean pooling and a readout; an example whose mean exceeds 5 has its
    channels mixed by a fixed matrix before pooling, which makes the conv's gradients
    inseparable for a batch with both kinds of examples."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.head = nn.Linear(3, 4)
        self.register_buffer("mix", torch.randn(3, 3))

    def forward(self, x):
        h = torch.relu(self.conv(x))
        mixed = torch.einsum("cd,ndhw->nchw", self.mix, h)
        h = torch.where((x.mean((1, 2, 3)) > 5)[:, None, None, None], mixed, h)
        return self.head(h.mean((2, 3)))


def test_a_batch_that_does_not_separate_keeps_its_jacobian():
    """The probe examples (the first two of x1) separate; the other examples of x1 and
    x2 do not: those batches keep the Jacobian and the kernels stay exact."""
    torch.manual_seed(0)
    model = randomize(_SwitchedMixing())
    x1 = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    x1[2:] += 10
    x2 = torch.randn(3, 2, 5, 5, dtype=torch.float64) + 10
    strategy = StructuredStrategy(FunctionalModel(model), 4, full=True)
    strategy.measure(x1)
    assert strategy.separable_terms == {("layer 'conv' (Conv2d)", 0)}
    assert not strategy.features(x1).separable[0].split
    assert_structured_matches(model, x1, x2)


class _PooledTokens(nn.Module):
    """A per-position Linear on (N, L, E), ReLU, mean over positions, a readout: the
    per-position layer separates (its gradients are ReLU′ ⊙ W_out[o] / L)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.inner(x)).mean(1))


def test_half_precision_finds_no_separable_layer():
    """In float32 the per-position layer separates; in bfloat16 none is looked for (its
    rounding, 2⁻⁸, would let `separate` accept gradients that do not factor)."""
    x = torch.randn(3, 5, 4)
    found = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = _PooledTokens().to(dtype)
        strategy = StructuredStrategy(FunctionalModel(model), 3, full=True)
        strategy.measure(x.to(dtype))
        found[dtype] = strategy.separable_terms
    assert found[torch.float32] == {("layer 'inner' (Linear)", 0)}
    assert found[torch.bfloat16] == frozenset()
