"""The chain path of the structured eNTK (`kernels/_chain.py`): output gradients of a
Sequential of dense layers and elementwise activations by the chain rule, without autograd.

Against the brute-force reference, float64, tolerance 1e-10 relative Frobenius (the same
sums of products in another order agree to ~1e-14; a wrong derivative, scale or separable
trace term changes the kernel by O(1)); full and trace mode, x2 and the diagonal
(`assert_structured_matches`). Models that are not chains must take the general path.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_structured_layers import assert_structured_matches, randomize
from torch import nn

import ntkscope as ns
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._structured import StructuredStrategy

ACTIVATIONS = {
    "ReLU": nn.ReLU,
    "Tanh": nn.Tanh,
    "GELU": nn.GELU,
    "SiLU": nn.SiLU,
    "LeakyReLU": lambda: nn.LeakyReLU(0.2),
    "Softplus": nn.Softplus,
    "Identity": nn.Identity,
    "Dropout": lambda: nn.Dropout(0.5),  # eval mode: the identity
}


def _chain_of(model: nn.Module, full: bool = True):
    return StructuredStrategy(FunctionalModel(model), 1, full).chain


@settings(max_examples=12, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    acts=st.lists(st.lists(st.sampled_from(sorted(ACTIVATIONS)), max_size=2), min_size=3),
    n_out=st.integers(1, 4),
    bias=st.booleans(),
    flatten=st.booleans(),
)
def test_a_chain_of_linear_layers_and_activations_matches_the_reference(
    widths, acts, n_out, bias, flatten
):
    """torch layers, 1–3 hidden layers, 0–2 activations (composed) after each, with and
    without biases, a Flatten before the first layer or not."""
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    d_in = 3
    for i, width in enumerate([*widths, n_out]):
        layers.append(nn.Linear(d_in, width, bias=bias))
        if i < len(widths):
            layers += [ACTIVATIONS[name]() for name in acts[i]]
        d_in = width
    model = randomize(nn.Sequential(*layers), seed=len(layers))
    assert _chain_of(model) is not None
    shape = (5, 3, 1) if flatten else (5, 3)
    x1 = torch.randn(shape, dtype=torch.float64)
    x2 = torch.randn((4, *shape[1:]), dtype=torch.float64)
    assert_structured_matches(model, x1, x2)


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh", "gelu", "abs"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_ntkscope_mlps_take_the_chain_and_match_the_reference(activation, parameterization):
    """`ns.models.mlp` (Dense layers with forward scales, ActivationLayer), σ_b > 0."""
    model = ns.models.mlp(
        4, 6, 2, 3, activation=activation, parameterization=parameterization, sigma_b=0.3
    ).double()
    assert _chain_of(model) is not None
    x1, x2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    assert_structured_matches(model, x1, x2)


def test_frozen_parameters_and_a_frozen_first_layer():
    """A frozen bias stays out of θ; a wholly frozen first layer has no rule, so the model is
    not a chain (the general path runs); both kernels exact."""
    model = randomize(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)))
    model[0].bias.requires_grad_(False)
    assert _chain_of(model) is not None
    x1, x2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    assert_structured_matches(model, x1, x2)
    model[0].weight.requires_grad_(False)
    assert _chain_of(model) is None
    assert_structured_matches(model, x1, x2)


def test_a_layer_applied_twice_is_not_a_chain():
    """The general path's refusal (a layer called more than once), not a wrong kernel."""
    shared = nn.Linear(4, 4)
    model = randomize(nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2)))
    assert _chain_of(model) is None
    with pytest.raises(ValueError, match="called more than once"):
        ns.empirical_ntk(model, torch.randn(3, 4, dtype=torch.float64), method="structured")


def _not_chains():
    yield "a norm between", nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    yield (
        "an activation last",
        nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh()),
    )
    yield "not a Sequential", _Residual()
    yield "an in-place ELU", nn.Sequential(nn.Linear(4, 4), nn.ELU(inplace=True), nn.Linear(4, 2))
    yield (
        "softmax (not elementwise)",
        nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1), nn.Linear(4, 2)),
    )


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


@pytest.mark.parametrize("why, model", list(_not_chains()), ids=[w for w, _ in _not_chains()])
def test_models_that_are_not_chains_take_the_general_path(why, model):
    model = randomize(model)
    assert _chain_of(model) is None, why
    x1, x2 = torch.randn(4, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    assert_structured_matches(model, x1, x2)


def test_an_output_selector_or_sequence_inputs_take_the_general_path():
    """A chain model with ``output=`` (the selected tensor is not the readout's), or applied
    to (N, L, E) sequences (every position is a position of the dense layers' `Factors`)."""
    model = randomize(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)))
    x1, x2 = torch.randn(4, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    first = lambda out: out[:, :1]  # noqa: E731
    fm = FunctionalModel(model, output=first)
    assert StructuredStrategy(fm, 1, True).chain is None
    assert_structured_matches(model, x1, x2, output=first)
    s1, s2 = torch.randn(4, 2, 4, dtype=torch.float64), torch.randn(3, 2, 4, dtype=torch.float64)
    assert_structured_matches(model, s1, s2)
