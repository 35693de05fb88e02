"""Elementwise activations by name, with their derivatives.

The same table serves the finite networks (`ntkscope.models`) and the infinite-width
recursions (`ntkscope.kernels.dual`), so a name means the same function in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch

Elementwise = Callable[[torch.Tensor], torch.Tensor]


class ActivationName(StrEnum):
    """Built-in activations (`ntkscope.kernels.dual` states how each kernel is computed).

    Closed-form kernels: RELU max(0, x); LEAKY_RELU max(x, 0.01 x); ABS |x|; ERF erf(x);
    GELU (exact) x·Φ(x); SIN, COS; IDENTITY x; SIGN sign(x); STEP 1[x > 0].
    Numerical kernels (Mehler series): TANH, SIGMOID, SILU x·σ(x), SOFTPLUS log(1 + eˣ),
    ELU (α = 1), MISH x·tanh(softplus(x)).
    """

    RELU = "relu"
    ERF = "erf"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    GELU = "gelu"
    IDENTITY = "identity"
    LEAKY_RELU = "leaky_relu"
    ABS = "abs"
    SIN = "sin"
    COS = "cos"
    SIGN = "sign"
    STEP = "step"
    SILU = "silu"
    SOFTPLUS = "softplus"
    ELU = "elu"
    MISH = "mish"


LEAKY_RELU_SLOPE = 0.01
"""Slope of "leaky_relu" for x < 0 (torch's default)."""


def _gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def _silu_derivative(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _mish_derivative(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(torch.nn.functional.softplus(x))
    return t + x * (1.0 - t * t) * torch.sigmoid(x)


def _step(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def _zero(x: torch.Tensor) -> torch.Tensor:
    """The derivative autograd gives sign and step: 0 (their jump at 0 carries no gradient)."""
    return torch.zeros_like(x)


_TABLE: dict[ActivationName, tuple[Elementwise, Elementwise]] = {
    ActivationName.RELU: (torch.relu, lambda x: (x > 0).to(x.dtype)),
    ActivationName.ERF: (torch.erf, lambda x: 2.0 / math.sqrt(math.pi) * torch.exp(-x * x)),
    ActivationName.TANH: (torch.tanh, lambda x: 1.0 - torch.tanh(x) ** 2),
    ActivationName.SIGMOID: (
        torch.sigmoid,
        lambda x: torch.sigmoid(x) * (1.0 - torch.sigmoid(x)),
    ),
    ActivationName.GELU: (torch.nn.functional.gelu, _gelu_derivative),
    ActivationName.IDENTITY: (lambda x: x, torch.ones_like),
    ActivationName.LEAKY_RELU: (
        lambda x: torch.nn.functional.leaky_relu(x, LEAKY_RELU_SLOPE),
        lambda x: torch.where(x > 0, 1.0, x.new_full((), LEAKY_RELU_SLOPE)),
    ),
    ActivationName.ABS: (torch.abs, torch.sign),
    ActivationName.SIN: (torch.sin, torch.cos),
    ActivationName.COS: (torch.cos, lambda x: -torch.sin(x)),
    ActivationName.SIGN: (torch.sign, _zero),
    ActivationName.STEP: (_step, _zero),
    ActivationName.SILU: (torch.nn.functional.silu, _silu_derivative),
    ActivationName.SOFTPLUS: (torch.nn.functional.softplus, torch.sigmoid),
    ActivationName.ELU: (
        torch.nn.functional.elu,
        lambda x: torch.where(x > 0, 1.0, torch.exp(torch.clamp(x, max=0.0))),
    ),
    ActivationName.MISH: (torch.nn.functional.mish, _mish_derivative),
}


def autograd_derivative(fn: Elementwise) -> Elementwise:
    """φ'(x) of an elementwise callable by one backward pass (sum of outputs)."""

    def derivative(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(xg).sum(), xg)
        return grad

    return derivative


@dataclass(frozen=True)
class Activation:
    """An elementwise function φ with its derivative φ'.

    Attributes:
        name: the built-in name, or the callable's ``__name__`` for user functions.
        fn: φ, elementwise on tensors.
        derivative: φ', elementwise on tensors (autograd for user callables).
        builtin: the `ActivationName` when φ is built in (closed forms key on it).
    """

    name: str
    fn: Elementwise
    derivative: Elementwise
    builtin: ActivationName | None


def resolve_activation(activation: str | Elementwise | Activation) -> Activation:
    """Turn a name, a callable or an `Activation` into an `Activation`.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
        TypeError: for anything that is neither a string nor a callable.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        try:
            key = ActivationName(activation.lower())
        except ValueError:
            known = ", ".join(a.value for a in ActivationName)
            raise ValueError(
                f"activation: unknown name {activation!r}; expected one of {known} or a callable"
            ) from None
        fn, derivative = _TABLE[key]
        return Activation(key.value, fn, derivative, key)
    if callable(activation):
        name = getattr(activation, "__name__", type(activation).__name__)
        return Activation(name, activation, autograd_derivative(activation), None)
    raise TypeError(f"activation: expected a name or a callable, got {type(activation).__name__}")
