"""Bad input to `empirical_ntk` gives a clear error naming the argument."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import ntkscope as ns


@pytest.fixture
def model():
    return ns.models.mlp(4, 8, 1, 2, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(x1=torch.randn(4)), ValueError, r"x1: expected a batch with at least 2 dim"),
        (dict(x1=torch.randn(0, 4)), ValueError, r"x1: the batch is empty"),
        (dict(x1=torch.tensor([[0.0, float("nan"), 1.0, 2.0]])), ValueError, r"x1: .*NaN"),
        (dict(x2=torch.full((2, 4), float("inf"))), ValueError, r"x2: .*NaN or infinite"),
        (dict(x1=torch.randn(3, 5)), ValueError, r"x1: the model cannot be applied"),
        (dict(x2=torch.randn(3, 5)), ValueError, r"x2: the model cannot be applied"),
        (dict(x1=[[1.0, 2.0, 3.0, 4.0]]), TypeError, r"x1: expected a tensor, a tuple"),
        (dict(x1=torch.ones(3, 4, dtype=torch.int64)), ValueError, r"x1: the model cannot be"),
        (dict(x1=(torch.ones(3, 4), torch.ones(2))), ValueError, r"x1: tensors have different"),
        (dict(x1={"a": torch.ones(3, 4), "b": 1}), TypeError, r"x1\['b'\]: expected a torch"),
        (dict(x1=(torch.ones(3, 4), 1j * torch.ones(3))), TypeError, r"x1\[1\]: complex"),
        (dict(x2=(torch.randn(2, 4),)), ValueError, r"x2: a tuple of 1 tensors, but x1 is a"),
        (dict(output="logits"), TypeError, r"output: expected a callable"),
        (dict(output=lambda out: None), TypeError, r"output: expected the selected model output"),
        (dict(x1=torch.randn(3, 4, dtype=torch.float64)), TypeError, r"x1: dtype/device"),
        (dict(method="fast"), ValueError, r"method: expected one of 'auto', 'structured'"),
        (dict(mode="diag"), ValueError, r"mode: expected one of 'full', 'trace'"),
        (dict(x2=torch.randn(2, 4), diagonal=True), ValueError, r"x2: diagonal=True"),
        (dict(memory_budget="lots"), ValueError, r"memory_budget: expected a size"),
        (dict(memory_budget=-5), ValueError, r"memory_budget: expected a positive size"),
        (dict(memory_budget=10), ValueError, r"memory_budget: 10 bytes is too small"),
        (dict(params={"9.weight": torch.zeros(2)}), ValueError, r"params: '9.weight' is not"),
        (dict(params={"0.weight": torch.zeros(2)}), ValueError, r"params: '0.weight' must be"),
        # issue 18, defect 4: these were blamed on x1, unnamed, or accepted
        (
            dict(params={"0.weight": torch.zeros(8, 4, dtype=torch.float64)}),
            TypeError,
            r"params: '0.weight' has dtype/device torch.float64",
        ),
        (
            dict(params={"0.weight": torch.full((8, 4), float("nan"))}),
            ValueError,
            r"params: '0.weight' contains NaN",
        ),
        (dict(memory_budget=float("nan")), ValueError, r"memory_budget: expected a positive size"),
        (dict(memory_budget=float("inf")), ValueError, r"memory_budget: expected a positive size"),
        (dict(diagonal="yes"), TypeError, r"diagonal: expected True or False, got 'yes'"),
    ],
)
def test_bad_arguments_are_named(model, kwargs, error, match):
    arguments = dict(x1=torch.randn(3, 4), x2=None) | kwargs
    with pytest.raises(error, match=match):
        ns.empirical_ntk(model, **arguments)


def test_two_values_for_one_tied_parameter_are_refused():
    """``second.weight`` is ``first.weight``: given both, they must be equal."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    model.add_module("3", nn.Linear(4, 4))
    model[3].weight = model[0].weight  # tied, unused: named twice by named_parameters
    params = {"0.weight": torch.zeros(4, 4), "3.weight": torch.ones(4, 4)}
    with pytest.raises(ValueError, match=r"params: '3.weight' and '0.weight' name one tied"):
        ns.empirical_ntk(model, torch.randn(3, 4), params=params)
    model[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"params: '3.weight' is a frozen parameter"):
        ns.empirical_ntk(model, torch.randn(3, 4), params={"3.weight": torch.ones(4, 4)})


def test_model_errors():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module"):
        ns.empirical_ntk(lambda t: t, x)
    frozen = ns.models.mlp(4, 8, 1, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="model: has no trainable parameters"):
        ns.empirical_ntk(frozen, x)

    class TextOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, t):
            return f"{self.layer(t).sum()}"

    with pytest.raises(TypeError, match="output: the model returns str"):
        ns.empirical_ntk(TextOutput(), x)


def test_non_finite_kernel_is_refused():
    model = ns.models.mlp(4, 8, 1, 2, activation=torch.sqrt, seed=0)  # sqrt of negatives: NaN
    with pytest.raises(ValueError, match="NaN or infinite entries"):
        ns.empirical_ntk(model, torch.randn(5, 4), method="jacobian")


@pytest.mark.parametrize(
    ("dtype", "scale", "top"),
    [(torch.float16, 80.0, "65504"), (torch.bfloat16, 1e19, "3.38953e+38")],
    ids=["float16", "bfloat16"],
)
@pytest.mark.parametrize("method", ["auto", "structured", "jacobian", "ntvp", "autograd"])
def test_a_half_precision_kernel_that_overflows_says_so(dtype, scale, top, method):
    """Regression (u3): finite outputs and gradients, kernel entries beyond the dtype's
    largest value; the error blamed the model's outputs or gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2)).double()
    x = scale * torch.randn(4, 64, dtype=torch.float64)
    exact = ns.empirical_ntk(model, x, mode="full", method="autograd")
    assert exact.abs().max() > 2 * torch.finfo(dtype).max  # the premise: it overflows
    model, x = model.to(dtype), x.to(dtype)
    assert torch.isfinite(model(x)).all()
    message = "x1: .*outputs are finite, .*" + re.escape(f"range of {dtype} (max {top}); ")
    with pytest.raises(ValueError, match=message + "compute it in float32"):
        ns.empirical_ntk(model, x, mode="full", method=method)


def test_a_half_precision_kernel_that_overflows_on_the_probe_says_so():
    """u3's case: jacobian's kernel of the probe examples overflows float16 where autograd's
    reaches 108,291; the probe refused it with "inf vs 108291 from autograd"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 2)).half()
    x = (40 * torch.randn(4, 64)).half()
    assert torch.isfinite(model(x)).all()
    message = r"method='jacobian': the kernel disagrees with autograd \(its entries exceed the"
    with pytest.raises(ValueError, match=message + r" range of torch\.float16 \(max 65504\)"):
        ns.empirical_ntk(model, x, mode="full", method="jacobian")


def test_a_half_precision_kernel_of_non_finite_outputs_blames_them():
    model = ns.models.mlp(4, 8, 1, 2, activation=torch.sqrt, seed=0).half()  # NaN outputs
    with pytest.raises(ValueError, match="the model's outputs or gradients are not finite"):
        ns.empirical_ntk(model, torch.randn(5, 4).half(), method="autograd")


@pytest.mark.parametrize(
    "layer",
    [
        nn.Dropout(0.1),
        nn.Dropout1d(0.1),
        nn.Dropout2d(0.1),
        nn.Dropout3d(0.1),
        nn.AlphaDropout(0.1),
        nn.FeatureAlphaDropout(0.1),
    ],
)
def test_dropout_in_training_mode_is_refused(layer):
    model = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2))
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"model: layer '1' \({name}\) is in training mode"):
        ns.empirical_ntk(model, torch.randn(3, 4))
    ns.empirical_ntk(model.eval(), torch.randn(3, 4))  # in eval mode it is the identity


class _Centered(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x - x.mean(0))


def test_batch_coupled_model_is_refused():
    with pytest.raises(ValueError, match=r"model: its output for the first example of x1 change"):
        ns.empirical_ntk(_Centered(), torch.randn(3, 4))


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("my_op has no derivative")


class _NoDerivative(nn.Module):
    """A Linear layer followed by an op that has no derivative: no method can run."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return _NoBackward.apply(self.layer(x))


def test_error_when_every_method_fails_names_the_op():
    with pytest.raises(ValueError, match=r"model: no eNTK method .*autograd: .*my_op has no"):
        ns.empirical_ntk(_NoDerivative(), torch.randn(3, 4))


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp", "autograd"])
def test_a_failed_method_does_not_suggest_auto_when_auto_fails_too(method):
    """The advice after an explicit method's failure is true: here no method works, so it
    says so instead of suggesting auto (test_real_models: it names the method auto runs)."""
    with pytest.raises(ValueError, match=rf"^method='{method}': ") as error:
        ns.empirical_ntk(_NoDerivative(), torch.randn(3, 4), method=method)
    assert "use method='auto'" not in str(error.value)
    assert str(error.value).endswith(
        "; no other method works on this model either (method='auto' fails too)"
    )


def test_a_budget_too_small_for_the_diagonal_is_named_as_given():
    """The diagonal plans with half the budget: the message gives the budget the user passed."""
    model = ns.models.mlp(4, 64, 2, 2, seed=0)
    with pytest.raises(ValueError, match=r"memory_budget: 3000 bytes is too small for diagonal"):
        ns.empirical_ntk(model, torch.randn(30, 4), diagonal=True, memory_budget="3KB")


def test_an_integer_output_is_refused_naming_output():
    """A model returning a dict whose first entry is an argmax: the selected output has no
    gradient; the message says so and how to select another (every method used to fail with
    torch's own text)."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 3)

        def forward(self, x):
            y = self.layer(x)
            return {"pred": y.argmax(-1), "scores": y}

    with pytest.raises(TypeError, match=r"output: the selected model output is a torch.int64"):
        ns.empirical_ntk(Model(), torch.randn(3, 4))
    assert ns.empirical_ntk(Model(), torch.randn(3, 4), output=lambda o: o["scores"]).shape == (
        3,
        3,
    )


def test_a_detached_output_is_named_as_such():
    """Every method fails on an output without a gradient: one message says why, naming
    output, instead of each method's torch error."""

    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, x):
            return self.layer(x).detach()

    with pytest.raises(ValueError, match=r"output: the selected model output does not depend"):
        ns.empirical_ntk(Detached(), torch.randn(3, 4))


def test_batchnorm_without_running_statistics_is_refused_in_eval_mode():
    """It normalizes by the batch even in eval mode (the message used to blame the inputs, or
    suggest model.eval() for a model already in eval mode)."""
    model = nn.Sequential(nn.Linear(5, 5), nn.BatchNorm1d(5, track_running_stats=False))
    with pytest.raises(ValueError, match=r"model: layer '1' \(BatchNorm1d\) keeps no running"):
        ns.empirical_ntk(model.eval(), torch.randn(4, 5))


def test_parameters_of_two_dtypes_are_refused_naming_model():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2).double())
    with pytest.raises(TypeError, match=r"model: its trainable parameters have several dtypes"):
        ns.empirical_ntk(model, torch.randn(3, 4))


class _DropPath(nn.Module):
    """Stochastic depth as vision models write it: a per-example Bernoulli mask in training
    mode, which leaves most examples unchanged (the batch-coupling check often passes)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        keep = (torch.rand(x.shape[0], 1, dtype=x.dtype) > self.p).to(x)
        return x * keep / (1 - self.p)


class _LayerDrop(nn.Module):
    """A layer skipped at random in training mode, one draw per forward pass."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.layer = p, nn.Linear(8, 8)

    def forward(self, x):
        if self.training and float(torch.rand(())) < self.p:
            return x
        return self.layer(x)


class _Residual(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


@pytest.mark.parametrize(
    ("inner", "name"),
    [
        (nn.Sequential(nn.Linear(8, 8), _DropPath(0.1)), r"layer 'block\.inner\.1' \(_DropPath\)"),
        (_LayerDrop(0.1), r"layer 'block\.inner' \(_LayerDrop\)"),
    ],
)
def test_layers_that_draw_random_numbers_in_training_mode_are_refused(inner, name):
    """Refused at every draw of the masks (the generator moved, not a lucky comparison of
    outputs: with p = 0.1 the old coupling check let about 8 in 10 DropPath calls run),
    naming the layer; in eval mode the model runs."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    model.add_module("block", _Residual(inner))
    model.add_module("head", nn.Linear(8, 2))
    x = torch.randn(5, 4)
    for seed in range(10):
        torch.manual_seed(seed)
        with pytest.raises(ValueError, match=rf"model: {name} draws random numbers"):
            ns.empirical_ntk(model, x, method="auto")
    ns.empirical_ntk(model.eval(), x)


def test_a_model_switched_to_training_mode_after_planning_is_checked_again():
    model = nn.Sequential(nn.Linear(4, 8), _DropPath(0.5), nn.Linear(8, 2)).eval()
    prepared = ns.kernels.PreparedNTK(model, torch.randn(5, 4))
    prepared()
    model.train()
    with pytest.raises(ValueError, match=r"layer '1' \(_DropPath\) draws random numbers"):
        prepared()
    model.eval()
    prepared()


def test_a_forward_pass_that_changes_a_buffer_is_refused_naming_it():
    """spectral_norm's power iteration runs in training mode and moves its vector ``_u``
    at each evaluation; in eval mode it does not."""
    layer = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 8))
    model = nn.Sequential(layer, nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"model: .* changes the buffer '0\.param.*_u' in place"):
        ns.empirical_ntk(model, x)
    ns.empirical_ntk(model.eval(), x)
