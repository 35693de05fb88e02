"""Every eNTK method against the brute-force reference, in float64.

Tolerance: 1e-10 relative Frobenius error. Every method computes the same sums of
products as the reference in a different order; in float64 the rounding error of such
sums is ~1e-16 · (number of terms), far below 1e-10 for these sizes, while any wrong
term (a missing scale, bias, output pair or position) changes the result by O(1).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import ntkscope as ns
from reference import brute_force_ntk, relative_error

TOL = 1e-10
METHODS = ["structured", "jacobian", "ntvp", "auto"]


def assert_matches_reference(model, x1, x2=None, *, mode, diagonal=False, methods=METHODS):
    expected = brute_force_ntk(model, x1, x2, mode=mode, diagonal=diagonal)
    for method in methods:
        got = ns.empirical_ntk(model, x1, x2, mode=mode, diagonal=diagonal, method=method)
        assert got.dtype == torch.float64
        assert relative_error(got, expected) <= TOL, method


@st.composite
def mlp_cases(draw):
    depth = draw(st.integers(0, 3))
    widths = draw(st.lists(st.integers(1, 9), min_size=depth, max_size=depth))
    model = ns.models.mlp(
        d_in=draw(st.integers(1, 6)),
        width=widths,
        depth=depth,
        d_out=draw(st.integers(1, 5)),
        activation=draw(st.sampled_from(["relu", "erf", "tanh", "sigmoid", "gelu", "identity"])),
        parameterization=draw(st.sampled_from(["ntk", "standard"])),
        sigma_w=draw(st.floats(0.5, 2.0)),
        sigma_b=draw(st.sampled_from([0.0, 0.1, 1.0])),
        bias=draw(st.sampled_from([None, True, False])),
        seed=draw(st.integers(0, 2**16)),
    ).double()
    return model, draw(st.booleans()), draw(st.sampled_from(["full", "trace"]))


@given(case=mlp_cases(), n1=st.integers(1, 5), n2=st.integers(1, 4), diagonal=st.booleans())
def test_mlp_every_method_equals_brute_force(case, n1, n2, diagonal):
    model, with_x2, mode = case
    d_in = model[0].weight.shape[1]
    x1 = torch.randn(n1, d_in, dtype=torch.float64)
    x2 = torch.randn(n2, d_in, dtype=torch.float64) if with_x2 and not diagonal else None
    assert_matches_reference(model, x1, x2, mode=mode, diagonal=diagonal)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("mode", ["full", "trace"])
def test_cnn_every_method_equals_brute_force(parameterization, mode):
    model = ns.models.cnn(2, 8, 2, 3, parameterization=parameterization, sigma_b=0.3, seed=1)
    x1, x2 = torch.randn(3, 2, 4, 4), torch.randn(2, 2, 4, 4)
    assert_matches_reference(model.double(), x1.double(), x2.double(), mode=mode)
    assert_matches_reference(model, x1.double(), mode=mode, diagonal=True)


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp", "autograd"])
@pytest.mark.parametrize("n_out", [2, 5])
def test_every_method_gives_an_exactly_symmetric_full_kernel(method, n_out):
    """Θ(x_m, x_n) = Θ(x_n, x_m)ᵀ to the last bit, each example's own O×O block included,
    whichever path computes a block with itself (by output for O ≥ 4, else mirrored); and
    the reference to 1e-12 relative (float64, the same products in another order)."""
    model = ns.models.cnn(2, 8, 2, n_out, seed=1).double()
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    k = ns.empirical_ntk(model, x, mode="full", method=method)
    assert torch.equal(k, k.transpose(0, 1).transpose(2, 3))
    assert relative_error(k, brute_force_ntk(model, x, mode="full")) < 1e-12


class TorchLayers(nn.Module):
    """Plain torch layers: strided, dilated and 'same'-padded convs, a sequence Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, padding="same", dilation=2, bias=False)
        self.seq = nn.Linear(4, 5)  # applied at every position of a (N, P, 4) sequence
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.tanh(self.conv2(torch.relu(self.conv1(x))))
        h = self.seq(h.flatten(2).transpose(1, 2))  # (N, P, 5)
        return self.head(torch.nn.functional.gelu(h).mean(1))


@pytest.mark.parametrize("mode", ["full", "trace"])
def test_torch_layers_equal_brute_force(mode):
    torch.manual_seed(0)
    model = TorchLayers().double()
    x1, x2 = torch.randn(3, 2, 6, 6).double(), torch.randn(2, 2, 6, 6).double()
    assert_matches_reference(model, x1, x2, mode=mode)


class Scale(nn.Module):
    """An elementwise trainable scale: no structured rule covers it."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, width))

    def forward(self, x):
        return x * self.weight


def test_unsupported_layer_falls_back_under_auto_and_is_named_under_structured():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), Scale(6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(4, 4, dtype=torch.float64)
    for mode in ("full", "trace"):
        assert_matches_reference(model, x, mode=mode, methods=["auto", "jacobian", "ntvp"])
    with pytest.raises(ValueError, match=r"'1' \(Scale\)"):
        ns.empirical_ntk(model, x, method="structured")
    assert ns.kernels.resolve_method(model, x) in ("jacobian", "ntvp")
    assert ns.kernels.resolve_method(ns.models.mlp(4, 6, 1, 3), x.float()) == "structured"


class _Bilinear(nn.Module):
    """A bilinear layer (no structured rule) and a readout."""

    def __init__(self):
        super().__init__()
        self.layer, self.head = nn.Bilinear(16, 16, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(x, x)))


def test_auto_weighs_ntvp_by_its_slower_flops():
    """Full mode, where NTVP's FLOP count was the lowest but its time 1.7–6× the fastest's
    (`empirical.NTVP_SLOWDOWN`): a per-token MLP (O = 12·5) goes to structured, a bilinear
    layer to jacobian (the costs decide, not a timing)."""
    torch.manual_seed(0)
    per_token = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 5))
    assert (
        ns.kernels.resolve_method(per_token, torch.randn(16, 12, 32), mode="full") == "structured"
    )
    assert ns.kernels.resolve_method(_Bilinear(), torch.randn(32, 16), mode="full") == "jacobian"


class SharedWeights(nn.Module):
    """The same Linear twice: the per-layer Gram form does not apply."""

    def __init__(self):
        super().__init__()
        self.layer, self.head = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(torch.tanh(self.layer(x)))))


class ParameterOutsideLayer(nn.Module):
    """A Linear whose weight is also used directly: only autograd can see it."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x):
        return self.layer(x) + x @ self.layer.weight


@pytest.mark.parametrize("model_type", [SharedWeights, ParameterOutsideLayer])
def test_models_the_structured_path_cannot_see_fall_back(model_type):
    torch.manual_seed(0)
    model = model_type().double()
    x = torch.randn(3, 3, dtype=torch.float64)
    assert_matches_reference(model, x, mode="full", methods=["auto", "jacobian", "ntvp"])
    with pytest.raises(ValueError, match="method='structured'"):
        ns.empirical_ntk(model, x, method="structured")


def test_frozen_parameters_and_eval_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    model = model.double()
    model(torch.randn(8, 3, dtype=torch.float64))  # update running statistics
    model.eval()
    model[0].bias.requires_grad_(False)
    model[1].weight.requires_grad_(False)
    model[1].bias.requires_grad_(False)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert_matches_reference(model, x, mode="full")
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        ns.empirical_ntk(model, x)


def test_params_replace_the_modules_parameters():
    model = ns.models.mlp(3, 6, 2, 2, seed=0).double()
    other = ns.models.mlp(3, 6, 2, 2, seed=1).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    expected = brute_force_ntk(other, x, mode="full")
    for method in ("structured", "jacobian", "ntvp"):
        got = ns.empirical_ntk(
            model, x, mode="full", method=method, params=dict(other.named_parameters())
        )
        assert relative_error(got, expected) <= TOL, method


class Tied(nn.Module):
    """Two Linear layers that share one weight: ``second.weight`` is ``first.weight``."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.first, self.second, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.second.weight = self.first.weight

    def forward(self, x):
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))


@pytest.mark.parametrize("method", ["auto", "jacobian", "ntvp", "autograd"])
def test_params_may_name_a_tied_parameter_by_either_name(method):
    """``state_dict()`` of a tied model names the shared weight twice, with one value: the
    eNTK is that of the model holding those values; the alias alone replaces the shared
    weight too (both against brute-force autograd on a model holding them, 1e-10). The
    structured method refuses a weight shared by two layers (its probe check), so ``auto``
    ends on a generic method."""
    model, other = Tied(0).double(), Tied(1).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    state = other.state_dict()
    assert "second.weight" in state and "second.weight" not in dict(other.named_parameters())
    got = ns.empirical_ntk(model, x, mode="full", method=method, params=state)
    assert relative_error(got, brute_force_ntk(other, x, mode="full")) <= TOL
    alias = {"second.weight": other.first.weight.detach()}
    got = ns.empirical_ntk(model, x, mode="full", method=method, params=alias)
    with torch.no_grad():
        model.first.weight.copy_(other.first.weight)
    assert relative_error(got, brute_force_ntk(model, x, mode="full")) <= TOL


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp"])
@pytest.mark.parametrize("mode", ["full", "trace"])
def test_tiny_memory_budget_tiles_and_agrees(method, mode):
    model = ns.models.mlp(4, 8, 2, 3, seed=0).double()
    x1, x2 = torch.randn(9, 4).double(), torch.randn(7, 4).double()
    for second in (None, x2):
        whole = ns.empirical_ntk(model, x1, second, mode=mode, method=method)
        tiles: list[int] = []
        budget = 6_000 if method == "structured" else 30_000  # a few examples per tile
        tiled = ns.empirical_ntk(
            model,
            x1,
            second,
            mode=mode,
            method=method,
            memory_budget=budget,
            progress=lambda done, total, tiles=tiles: tiles.append(total),
        )
        assert tiles and tiles[-1] > 4, "the budget should force several tiles"
        assert relative_error(tiled, whole) <= TOL
    diag = ns.empirical_ntk(
        model, x1, mode=mode, method=method, diagonal=True, memory_budget=budget
    )
    expected = ns.empirical_ntk(model, x1, mode=mode, method=method).diagonal(0, 0, 1)
    expected = expected.permute(2, 0, 1) if mode == "full" else expected
    assert relative_error(diag, expected) <= TOL


@given(case=mlp_cases(), n=st.integers(1, 4))
def test_float32_on_random_architectures(case, n):
    """Every method in float32 against the float64 reference. Each entry is a sum of
    products of O(1) terms computed in float32 (unit roundoff 6e-8) through ≤ 4 layers;
    1e-4 relative leaves a 100× margin for cancellation, while any wrong term is O(1)."""
    model, _, mode = case
    x = torch.randn(n, model[0].weight.shape[1], dtype=torch.float64)
    expected = brute_force_ntk(model, x, mode=mode)
    model32 = model.float()
    for method in METHODS:
        got = ns.empirical_ntk(model32, x.float(), mode=mode, method=method)
        assert got.dtype == torch.float32
        assert relative_error(got.double(), expected) <= 1e-4, method


def test_float32_agrees_with_float64():
    """float32 kernels carry ~1e-7 relative rounding per term; 1e-5 leaves room for sums."""
    model = ns.models.mlp(5, 32, 2, 3, seed=0)
    x = torch.randn(6, 5)
    expected = brute_force_ntk(model.double(), x.double(), mode="full")
    model.float()
    for method in ("structured", "jacobian", "ntvp"):
        got = ns.empirical_ntk(model, x, mode="full", method=method)
        assert got.dtype == torch.float32
        assert relative_error(got.double(), expected) <= 1e-5, method


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_any_autograd_context_and_inputs_that_require_grad(context):
    """Users call eNTKs inside no_grad/inference_mode blocks, on inputs tracked by autograd;
    a model returning (N,) has O = 1."""

    class Squeezed(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)

        def forward(self, x):
            return torch.tanh(self.layer(x)).squeeze(-1)

    torch.manual_seed(0)
    model = Squeezed().double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    expected = brute_force_ntk(model, x.detach(), mode="full")
    with context():
        for method in METHODS:
            got = ns.empirical_ntk(model, x, mode="full", method=method)
            assert relative_error(got, expected) <= TOL, method
