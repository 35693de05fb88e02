"""The pieces the structured rules compute on their own, against torch in float64.

- `Rule.input_gradient` (BatchNorm in eval mode, pointwise convolutions) against autograd's
  vector-Jacobian product of the same module at the same input;
- `_rules.norm.weighted_sum` against ``(g * w).sum(axis)``, at every chunk boundary;
- `_forms.upper_gram` against the Gram of the concatenated Jacobians;
- the features of a lone example (O copies, one backward pass) against the same example's
  in a batch of several (one backward pass per output).

Tolerance 1e-12 relative Frobenius: each computes the same sums of products as its
reference in another order (float64, ~1e-16 per rounding); a wrong channel, stride
offset, chunk or pair changes the result by O(1).
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ntkscope.kernels import _forms, _structured
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._gram import gram
from ntkscope.kernels._rules import norm, rule_type
from ntkscope.models.layers import Conv
from reference import relative_error

TOL = 1e-12

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def autograd_input_gradient(module: nn.Module, a: torch.Tensor, grad: torch.Tensor):
    a = a.clone().requires_grad_(True)
    return torch.autograd.grad(module(a), a, grad)[0]


def rule_input_gradient(module: nn.Module, a: torch.Tensor):
    trainable = frozenset(n for n, _ in module.named_parameters())
    return rule_type(module)(module, "layer", trainable).input_gradient(a)


def random_module(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=generator, dtype=t.dtype) + 0.5)
    return module


@settings(max_examples=30, deadline=None)
@given(
    dims=st.sampled_from([1, 2, 3]),
    stride=st.integers(1, 3),
    size=st.integers(1, 6),
    padding=st.sampled_from([0, "valid", "same"]),
    bias=st.booleans(),
    seed=st.integers(0, 100),
)
def test_pointwise_convolution_input_gradient(dims, stride, size, padding, bias, seed):
    if padding == "same":
        stride = 1  # torch refuses 'same' with a stride
    module = random_module(CONVS[dims](3, 2, 1, stride=stride, padding=padding, bias=bias), seed)
    a = torch.randn(4, 3, *[size] * dims, dtype=torch.float64)
    grad = torch.randn_like(module(a))
    got = rule_input_gradient(module, a)(grad)
    assert relative_error(got, autograd_input_gradient(module, a, grad)) <= TOL


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_input_gradient_in_eval_mode(dims, affine):
    module = random_module(NORMS[dims](3, affine=affine), seed=dims)
    a = torch.randn(4, 3, *[5] * dims, dtype=torch.float64)
    if dims == 1:
        a = a[..., 0]  # BatchNorm1d on (N, C) as well as on (N, C, L) below
        grad = torch.randn_like(a)
        got = rule_input_gradient(module, a)(grad)
        assert relative_error(got, autograd_input_gradient(module, a, grad)) <= TOL
        a = torch.randn(4, 3, 5, dtype=torch.float64)
    grad = torch.randn_like(a)
    got = rule_input_gradient(module, a)(grad)
    assert relative_error(got, autograd_input_gradient(module, a, grad)) <= TOL


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(2, 2, 3),
        nn.Conv2d(2, 2, 1, padding=1),
        nn.Conv2d(2, 2, 1, groups=2),
        nn.ConvTranspose2d(2, 2, 1),
        Conv(2, 2, 1),
        nn.LayerNorm(4),
        nn.Linear(2, 2),
    ],
)
def test_other_layers_leave_the_input_gradient_to_autograd(module):
    assert rule_input_gradient(module, torch.randn(1, 2, 4, 4)) is None


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 9),
    n_out=st.integers(1, 3),
    channels=st.integers(1, 4),
    positions=st.integers(1, 5),
    chunk=st.integers(1, 400),
    channels_last=st.booleans(),
)
def test_weighted_sum_in_chunks(n, n_out, channels, positions, chunk, channels_last):
    """Chunks of 1 to all examples (``chunk`` bytes: from less than one example's product)."""
    shape, axis = ((positions, channels), 2) if channels_last else ((channels, positions), 3)
    g = torch.randn(n, n_out, *shape, dtype=torch.float64)
    w = torch.randn(n, 1, *shape, dtype=torch.float64)
    with mock.patch.object(norm, "_CHUNK_BYTES", chunk):
        got = norm.weighted_sum(g, w, axis)
    assert relative_error(got, (g * w).sum(axis)) <= TOL


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 11),
    n_out=st.integers(1, 3),
    widths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    step=st.integers(1, 5),
    chunk=st.integers(1, 2000),
    seed=st.integers(0, 100),
)
def test_upper_gram_equals_the_gram_on_and_above_the_row_blocks(
    n, n_out, widths, step, chunk, seed
):
    """Row blocks of ``step`` examples, column chunks of ``chunk`` bytes (from one column to
    whole blocks): the pairs (i, j) with j at or after the first example of i's row block
    are the Gram's, the others 0."""
    generator = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(n, n_out, w, generator=generator, dtype=torch.float64) for w in widths]
    whole = torch.cat(blocks, dim=2)
    first = torch.arange(n) // step * step
    kept = (torch.arange(n)[None, :] >= first[:, None])[:, :, None, None]
    with mock.patch.object(_forms, "GRAM_CHUNK_BYTES", chunk):
        got = _forms.upper_gram(blocks, step)
    assert relative_error(got, gram(whole, whole, full=True) * kept) <= TOL


def test_a_lone_example_has_the_features_it_has_in_a_batch():
    """Every contraction form (Jacobian, positional, outer) and 3 outputs: Θ̂ of the lone
    example with itself and with the batch."""
    torch.manual_seed(0)
    model = nn.Sequential(  # 32 channels: the 2×2 conv's positional form 3.4× cheaper
        nn.Conv2d(2, 32, 3, padding=1), nn.BatchNorm2d(32), nn.Tanh(), nn.Conv2d(32, 8, 2, 2)
    )
    model.append(nn.Tanh()).append(nn.Flatten()).append(nn.Linear(8 * 4, 3))
    model = model.double().eval()
    strategy = _structured.StructuredStrategy(FunctionalModel(model, None, None), 3, True)
    assert strategy._copies(1) == 3
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    lone, batch = strategy.features(x[:1]), strategy.features(x)
    assert lone.jacobians and lone.positional and lone.outer
    expected = strategy.pair(batch, batch)[:1]
    assert relative_error(strategy.pair(lone, batch), expected) <= TOL
    assert relative_error(strategy.diagonal(lone), expected[:, 0]) <= TOL
