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
    """Built-in activations.

    RELU: max(0, x); closed-form kernels (arc-cosine, Cho & Saul 2009).
    ERF: erf(x); closed-form kernels (Williams 1997).
    IDENTITY: x; closed-form (linear) kernels.
    TANH, SIGMOID, GELU (exact, x·Φ(x)): kernels by Gauss–Hermite quadrature.
    """

    RELU = "relu"
    ERF = "erf"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    GELU = "gelu"
    IDENTITY = "identity"


def _gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


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
}


def _autograd_derivative(fn: Elementwise) -> Elementwise:
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
        return Activation(name, activation, _autograd_derivative(activation), None)
    raise TypeError(f"activation: expected a name or a callable, got {type(activation).__name__}")
