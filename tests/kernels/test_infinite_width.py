"""`infinite_width` against the fixed-family kernels and independent float64 recursions.

The recursions (tests/recursions.py) run on one joint covariance over every (input,
position) pair and share no code with `ntkscope.kernels`.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ntkscope as ns
from networks import Conv1dNet
from ntkscope.models.layers import Dense
from recursions import dense_ntk, erf_dual, inputs, position_mean, relu_dual, selection
from reference import relative_error

EXACT = 1e-12
"""The same formulas as `infinite_kernels` / `infinite_cnn_kernels` evaluated in another
order (einsum instead of matmul, matrices instead of shifts): float64 rounding only."""
RECURSION = 1e-10
"""Independent float64 recursions of the same formulas: rounding over a few layers."""


@settings(max_examples=12)
@given(
    activation=st.sampled_from(["relu", "erf", "tanh", "gelu", "identity"]),
    depth=st.integers(0, 3),
    sigma_w=st.floats(0.5, 2.0),
    sigma_b=st.sampled_from([0.0, 0.3]),
    n2=st.integers(1, 4),
)
def test_mlp_equals_infinite_kernels(activation, depth, sigma_w, sigma_b, n2):
    model = ns.models.mlp(3, 8, depth, 2, activation=activation, sigma_w=sigma_w, sigma_b=sigma_b)
    kernel_fn = ns.infinite_width(model)
    x1, x2 = inputs(5, 3), inputs(n2, 3, seed=1)
    options = dict(depth=depth, activation=activation, sigma_w=sigma_w, sigma_b=sigma_b)
    for args, kwargs in [((x1,), {}), ((x1, x2), {}), ((x1,), {"diagonal": True})]:
        ours = kernel_fn(*args, **kwargs)
        theirs = ns.infinite_kernels(*args, **kwargs, **options)
        for a, b in zip(ours, theirs, strict=True):
            assert relative_error(a, b) < EXACT


@settings(max_examples=12)
@given(
    activation=st.sampled_from(["relu", "erf"]),
    depth=st.integers(1, 3),
    readout=st.sampled_from(["gap", "flatten"]),
    pools=st.sampled_from([None, (), (0,)]),
    kernel_size=st.sampled_from([1, 3]),
)
def test_cnn_equals_infinite_cnn_kernels(activation, depth, readout, pools, kernel_size):
    pool_after = None if pools is None else [p for p in pools if p < depth]
    options = dict(
        depth=depth,
        activation=activation,
        sigma_b=0.2,
        readout=readout,
        pool_after=pool_after,
        kernel_size=kernel_size,
    )
    model = ns.models.cnn(2, 4, d_out=1, image_size=4, **options)
    x1, x2 = inputs(3, 2, 4, 4), inputs(2, 2, 4, 4, seed=1)
    del options["depth"]
    for args in [(x1,), (x1, x2)]:
        ours = ns.infinite_width(model)(*args)
        theirs = ns.infinite_cnn_kernels(*args, depth=depth, **options)
        for a, b in zip(ours, theirs, strict=True):
            assert relative_error(a, b) < EXACT


class Residual(nn.Module):
    """Dense → [x + Dense(φ(Dense(x)))] → Dense, NTK parameterization."""

    def __init__(self, d: int, width: int, sigma_w: float, sigma_b: float) -> None:
        super().__init__()
        kw = dict(sigma_w=sigma_w, sigma_b=sigma_b)
        self.inp, self.fc1 = Dense(d, width, **kw), Dense(width, width, **kw)
        self.fc2, self.out = Dense(width, width, **kw), Dense(width, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + 0.5 * self.fc2(torch.relu(self.fc1(h)))
        return self.out(h)


def test_residual_mlp_equals_recursion():
    sw2, sb2 = 1.7, 0.09
    x = inputs(6, 3)
    k1, t1 = dense_ntk(x @ x.T / 3, torch.zeros(6, 6, dtype=torch.float64), sw2, sb2)
    a, ta = dense_ntk(k1, t1, sw2, sb2)
    e_ff, e_dd = relu_dual(a)
    c, tc = dense_ntk(e_ff, ta * e_dd, sw2, sb2)
    k2, t2 = k1 + 0.25 * c, t1 + 0.25 * tc  # x + ½ f(x): independent branches
    nngp, ntk = dense_ntk(k2, t2, sw2, sb2)
    ours = ns.infinite_width(Residual(3, 8, sw2**0.5, sb2**0.5))(x)
    assert relative_error(ours[0], nngp) < RECURSION
    assert relative_error(ours[1], ntk) < RECURSION


class Concat(nn.Module):
    """cat([relu(Dense(x)), Dense(x)]) of widths 8 and ``width`` (then ``after``) → Dense."""

    def __init__(self, after: str = "dense", dim: int = 1, width: int = 24) -> None:
        super().__init__()
        self.a, self.b = Dense(3, 8, sigma_w=1.3, sigma_b=0.2), Dense(3, width, sigma_w=0.8)
        self.out = Dense(8 + width if dim else 8, 1, sigma_w=1.1, sigma_b=0.3)
        self.after, self.dim = after, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=self.dim)
        if self.after == "relu":
            h = torch.relu(h)
        return h if self.after == "nothing" else self.out(h)


def test_concatenation_is_the_fan_in_weighted_mean():
    # Groups of 8 and 24 features: the readout sees K = ¼ K_relu + ¾ K_linear, T likewise.
    x = inputs(5, 3)
    k0, t0 = x @ x.T / 3, torch.zeros(5, 5, dtype=torch.float64)
    ka, ta = dense_ntk(k0, t0, 1.3**2, 0.2**2)
    e_ff, e_dd = relu_dual(ka)
    kb, tb = dense_ntk(k0, t0, 0.8**2, 0.0)
    k, t = 0.25 * e_ff + 0.75 * kb, 0.25 * ta * e_dd + 0.75 * tb
    nngp, ntk = dense_ntk(k, t, 1.1**2, 0.3**2)
    kernel_fn = ns.infinite_width(Concat())
    ours = kernel_fn(x)
    assert relative_error(ours[0], nngp) < RECURSION
    assert relative_error(ours[1], ntk) < RECURSION
    assert relative_error(kernel_fn(x, diagonal=True)[1], ntk.diagonal()) < RECURSION
    assert any("concatenation" in line for line in kernel_fn.layers)


@pytest.mark.parametrize(
    ("after", "dim", "width", "message"),
    [
        ("relu", 1, 24, "activation relu acts on a concatenation"),
        ("nothing", 1, 24, "output is a concatenation"),
        ("dense", 0, 8, "not the width axis"),  # along the batch axis
        (
            "dense",
            0,
            24,
            r"x1: the model fails on one example of shape \(3,\): RuntimeError: Sizes of tens",
        ),
    ],
)
def test_concatenation_refuses_what_it_cannot_describe(after, dim, width, message):
    with pytest.raises(ValueError, match=message):
        ns.infinite_width(Concat(after, dim, width))(inputs(4, 3))


class LayerNormMLP(nn.Module):
    """Dense → LayerNorm (affine) → Dense → erf → Dense, NTK parameterization."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.inp, self.norm = Dense(d, width, sigma_b=0.5), nn.LayerNorm(width, eps=0.01)
        self.hidden, self.out = Dense(width, width, sigma_b=0.5), Dense(width, 1, sigma_b=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.erf(self.hidden(self.norm(self.inp(x)))))


def test_layernorm_mlp_equals_recursion():
    sw2, sb2 = 2.0, 0.25
    x = inputs(5, 4) * torch.tensor([[0.1], [1.0], [3.0], [0.5], [2.0]])
    k, t = dense_ntk(x @ x.T / 4, torch.zeros(5, 5, dtype=torch.float64), sw2, sb2)
    q = k.diagonal() + 0.01
    scale = 1 / (q[:, None] * q[None]).sqrt()
    k, t = k * scale, t * scale + k * scale + 1  # γ = 1, β = 0, both trainable
    k, t = dense_ntk(k, t, sw2, sb2)
    e_ff, e_dd = erf_dual(k)
    nngp, ntk = dense_ntk(e_ff, t * e_dd, sw2, sb2)
    ours = ns.infinite_width(LayerNormMLP(4, 8))(x)
    assert relative_error(ours[0], nngp) < RECURSION
    assert relative_error(ours[1], ntk) < RECURSION


def sp_conv(k, t, layer: nn.Conv1d, length: int, n: int):
    """Standard parameterization: Σ = σ_w²/k Σ_δ S K Sᵀ + σ_b², Θ = σ_w²/k Σ_δ S T Sᵀ +
    C_in Σ_δ S K Sᵀ + 1, with σ_w² = fan_in · mean W², σ_b² = mean b²."""
    size, (stride,), (dilation,), (pad,) = 3, layer.stride, layer.dilation, layer.padding
    out = (length + 2 * pad - dilation * (size - 1) - 1) // stride + 1
    mats = [selection(n, length, out, stride, dilation, pad, d) for d in range(size)]
    sk = sum(m @ k @ m.T for m in mats)
    st_ = sum(m @ t @ m.T for m in mats)
    fan_in = layer.weight[0].numel()
    sw2 = fan_in * layer.weight.detach().double().square().mean()
    sb2 = layer.bias.detach().double().square().mean()
    nngp = sw2 / size * sk + sb2
    return nngp, sw2 / size * st_ + layer.in_channels * sk + 1, out


def test_conv1d_network_equals_recursion():
    torch.manual_seed(0)
    model = Conv1dNet(2, 16)
    x, n, length = inputs(3, 2, 7), 3, 7
    rows = x.permute(0, 2, 1).reshape(n * length, 2)
    k, t = rows @ rows.T / 2, torch.zeros(n * length, n * length, dtype=torch.float64)
    k, t, length = sp_conv(k, t, model.c1, length, n)
    e_ff, e_dd = relu_dual(k)
    k, t, length = sp_conv(e_ff, t * e_dd, model.c2, length, n)
    e_ff, e_dd = relu_dual(k)
    mean = position_mean(n, length)
    k, t = mean @ e_ff @ mean.T, mean @ (t * e_dd) @ mean.T
    sw2 = 16 * model.out.weight.detach().double().square().mean()
    sb2 = model.out.bias.detach().double().square().mean()
    nngp, ntk = sw2 * k + sb2, sw2 * t + 16 * k + 1
    ours = ns.infinite_width(model)(x)
    assert relative_error(ours[0], nngp) < RECURSION
    assert relative_error(ours[1], ntk) < RECURSION


class ConvConcat(nn.Module):
    """cat([relu(Conv1d(x)), Conv1d(x)]) over 4 + 12 channels → Conv1d → relu → mean →
    Linear (standard parameterization)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(2, 12, 3, padding=1)
        self.c3 = nn.Conv1d(16, 6, 3, stride=2, dilation=2, padding=2)
        self.out = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.relu(self.c1(x)), self.c2(x)], dim=1)
        return self.out(torch.relu(self.c3(h)).mean(-1))


def test_concatenated_channels_equal_recursion():
    torch.manual_seed(1)
    model = ConvConcat()
    x, n, length = inputs(3, 2, 7), 3, 7
    rows = x.permute(0, 2, 1).reshape(n * length, 2)
    k, t = rows @ rows.T / 2, torch.zeros(n * length, n * length, dtype=torch.float64)
    ka, ta, _ = sp_conv(k, t, model.c1, length, n)
    e_ff, e_dd = relu_dual(ka)
    kb, tb, _ = sp_conv(k, t, model.c2, length, n)
    k, t = 0.25 * e_ff + 0.75 * kb, 0.25 * ta * e_dd + 0.75 * tb  # 4 and 12 of 16 channels
    k, t, length = sp_conv(k, t, model.c3, length, n)
    e_ff, e_dd = relu_dual(k)
    mean = position_mean(n, length)
    k, t = mean @ e_ff @ mean.T, mean @ (t * e_dd) @ mean.T
    sw2 = 6 * model.out.weight.detach().double().square().mean()
    sb2 = model.out.bias.detach().double().square().mean()
    ours = ns.infinite_width(model)(x)
    assert relative_error(ours[0], sw2 * k + sb2) < RECURSION
    assert relative_error(ours[1], sw2 * t + 6 * k + 1) < RECURSION


def test_tiles_and_diagonal_agree_with_one_tile():
    """A budget of one entry per tile gives the same kernels (rounding only)."""
    torch.manual_seed(0)
    kernel_fn = ns.infinite_width(Conv1dNet(2, 4))
    x1, x2 = inputs(4, 2, 5), inputs(3, 2, 5, seed=1)
    for args in [(x1,), (x1, x2)]:
        whole = kernel_fn(*args)
        tiled = kernel_fn(*args, memory_budget=1)
        for a, b in zip(tiled, whole, strict=True):
            assert relative_error(a, b) < EXACT
    nngp, ntk = kernel_fn(x1)
    diagonal = kernel_fn(x1, diagonal=True)
    assert torch.equal(diagonal[0], nngp.diagonal()) and torch.equal(diagonal[1], ntk.diagonal())


def test_same_branch_twice_is_a_scalar_multiple():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Dense(3, 4), Dense(4, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(h + h)

    x = inputs(4, 3)
    nngp, ntk = ns.infinite_width(Twice())(x)
    k1 = 2.0 * x @ x.T / 3  # Σ¹ = Θ¹ (σ_w² = 2, σ_b = 0); 2h has 4 Σ¹ and 4 Θ¹
    assert relative_error(nngp, 2.0 * 4 * k1) < EXACT  # σ_w² · 4Σ¹
    assert relative_error(ntk, 2.0 * 4 * k1 + 2.0 * 4 * k1) < EXACT  # Σ + σ_w² · 4Θ¹


class Custom(nn.Module):
    def __init__(self, layer: nn.Module, width: int = 4) -> None:
        super().__init__()
        self.inp, self.layer, self.out = nn.Linear(3, width), layer, nn.Linear(width, 1)

    def forward(self, x):
        return self.out(self.layer(self.inp(x)))


@pytest.mark.parametrize(
    "layer, name",
    [
        (nn.BatchNorm1d(4), "BatchNorm1d"),
        (nn.Softmax(-1), "Softmax"),
        (nn.MaxPool1d(1), "MaxPool1d"),
    ],
)
def test_unsupported_layer_is_named(layer, name):
    with pytest.raises(ns.kernels.ProgramError, match=f"layer.*{name}.*monte_carlo_kernels"):
        ns.infinite_width(Custom(layer))


def test_attention_and_recurrent_layers_are_named():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 1)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    with pytest.raises(ns.kernels.ProgramError, match=r"MultiheadAttention.*monte_carlo"):
        ns.infinite_width(Attention())
    with pytest.raises(ns.kernels.ProgramError, match=r"LSTM.*monte_carlo"):
        ns.infinite_width(nn.Sequential(nn.LSTM(3, 4)))


def test_correlated_branches_are_refused():
    class Correlated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.relu(h) + torch.tanh(h))

    with pytest.raises(ns.kernels.ProgramError, match=r"add: .*correlated.*a.*monte_carlo"):
        ns.infinite_width(Correlated())  # when the program is built, before any input


def test_program_lists_one_line_per_operation():
    kernel_fn = ns.infinite_width(Residual(3, 8, 1.0, 0.1))
    lines = kernel_fn.layers
    assert len(lines) == 1 + 7  # input; inp, fc1, relu, fc2, ×0.5, add, out
    assert lines[1].startswith("inp: Dense 3→8 (ntk)")
    assert "activation relu" in lines[3] and "sum of branches" in lines[6]
    assert repr(kernel_fn).count("\n") == len(lines) + 1


def test_bad_inputs_name_the_argument():
    kernel_fn = ns.infinite_width(ns.models.mlp(3, 4, 1, 1))
    with pytest.raises(ValueError, match="x2"):
        kernel_fn(inputs(2, 3), inputs(2, 3), diagonal=True)
    with pytest.raises(TypeError, match="x1"):
        kernel_fn(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="model"):
        ns.infinite_width(lambda x: x)


class FunctionalCNN(nn.Module):
    """`ntkscope.models.cnn(2, 4, 2, 1, pool_after=[0])` written with functional ops."""

    def __init__(self) -> None:
        super().__init__()
        reference = ns.models.cnn(2, 4, 2, 1, pool_after=[0], activation="erf")
        self.c1, self.c2, self.out = reference[0], reference[3], reference[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.avg_pool2d(torch.erf(self.c1(x)), 2)
        h = torch.erf(self.c2(h)).mean((2, 3), keepdim=True)
        return self.out(h.view(h.size(0), -1))


def test_functional_forms_equal_the_module_forms():
    x1, x2 = inputs(3, 2, 4, 4), inputs(2, 2, 4, 4, seed=1)
    ours = ns.infinite_width(FunctionalCNN())(x1, x2)
    theirs = ns.infinite_cnn_kernels(x1, x2, depth=2, activation="erf", pool_after=[0])
    for a, b in zip(ours, theirs, strict=True):
        assert relative_error(a, b) < EXACT


class Sequence(nn.Module):
    """Linear over the features of (N, L, D) → ReLU → Dropout (eval) → mean over L → Linear."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.inp, self.drop, self.out = nn.Linear(d, width), nn.Dropout(0.5), nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(nn.functional.relu(self.inp(x))).mean(1))


def test_sequence_model_equals_recursion():
    torch.manual_seed(0)
    model = Sequence(3, 16).eval()
    x, n, length = inputs(3, 5, 3), 3, 5
    rows = x.reshape(n * length, 3)
    sw2, sb2 = (
        3 * model.inp.weight.double().square().mean(),
        model.inp.bias.double().square().mean(),
    )
    k = sw2 * rows @ rows.T / 3 + sb2  # positions share the weights: every pair correlates
    t = 3 * rows @ rows.T / 3 + 1  # standard parameterization: n · K + 1
    e_ff, e_dd = relu_dual(k)
    mean = position_mean(n, length)
    k, t = mean @ e_ff @ mean.T, mean @ (t * e_dd) @ mean.T
    sw2, sb2 = (
        16 * model.out.weight.double().square().mean(),
        model.out.bias.double().square().mean(),
    )
    nngp, ntk = sw2 * k + sb2, sw2 * t + 16 * k + 1
    ours = ns.infinite_width(model)(x)
    assert relative_error(ours[0], nngp.detach()) < RECURSION
    assert relative_error(ours[1], ntk.detach()) < RECURSION


SERIES_VS_CLOSED = 1e-11
"""A clamp at 0 gets the numerical series dual, ReLU its closed form: the series'
truncation (measured 7e-14 relative here)."""


class Hidden(nn.Module):
    """Linear → ``act`` → Linear, ``act`` a module or a function."""

    def __init__(self, act) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.out, self.act = nn.Linear(3, 16), nn.Linear(16, 1), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.inp(x)))


@pytest.mark.parametrize(
    ("function", "module", "tolerance"),
    [
        (nn.functional.selu, nn.SELU(), EXACT),
        (nn.functional.celu, nn.CELU(), EXACT),
        (nn.functional.hardtanh, nn.Hardtanh(), EXACT),
        (nn.functional.relu6, nn.ReLU6(), EXACT),
        (lambda h: nn.functional.elu(h, 0.5), nn.ELU(0.5), EXACT),
        (lambda h: h.clamp(-1, 1), nn.Hardtanh(), EXACT),
        (lambda h: torch.clamp(h, min=0), nn.ReLU(), SERIES_VS_CLOSED),
        (lambda h: h.clamp(min=0.0), nn.ReLU(), SERIES_VS_CLOSED),
    ],
)
def test_functional_activations_equal_their_modules(function, module, tolerance):
    x = inputs(4, 3)
    ours = ns.infinite_width(Hidden(function))(x)
    theirs = ns.infinite_width(Hidden(module))(x)
    for a, b in zip(ours, theirs, strict=True):
        assert relative_error(a, b) < tolerance
