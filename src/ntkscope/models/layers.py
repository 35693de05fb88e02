"""Dense and convolutional layers in NTK or standard parameterization.

NTK parameterization (Jacot et al. 2018; docs/conventions.md): W, b ~ N(0, 1) and
``h = σ_w/√fan_in · W x + σ_b · b``. Standard parameterization: ``W ~ N(0, σ_w²/fan_in)``,
``b ~ N(0, σ_b²)`` and ``h = W x + b``. Both compute the same function at initialization
and differ in their gradients. The forward multipliers are the attributes
``weight_scale`` and ``bias_scale``, which the structured eNTK reads.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from torch import nn
from torch.nn import functional as F

from ntkscope.models.activations import Activation, Elementwise, resolve_activation


class Parameterization(StrEnum):
    """How the initialization scale enters a layer.

    NTK: unit-variance parameters, scale in the forward pass (lazy limit, Jacot et al. 2018).
    STANDARD: the scale in the initialization, as in PyTorch's own layers.
    """

    NTK = "ntk"
    STANDARD = "standard"


def _init(layer: nn.Module, fan_in: int, generator: torch.Generator | None) -> None:
    """Draw parameters and set forward multipliers for ``layer.parameterization``."""
    ntk = layer.parameterization is Parameterization.NTK
    weight_std = 1.0 if ntk else layer.sigma_w / math.sqrt(fan_in)
    bias_std = 1.0 if ntk else layer.sigma_b
    layer.weight_scale = layer.sigma_w / math.sqrt(fan_in) if ntk else 1.0
    layer.bias_scale = layer.sigma_b if ntk else 1.0
    with torch.no_grad():
        layer.weight.normal_(0.0, weight_std, generator=generator)
        if layer.bias is not None:
            layer.bias.normal_(0.0, bias_std, generator=generator)


class Dense(nn.Module):
    """``h = weight_scale · x Wᵀ + bias_scale · b`` (shapes: x (..., d_in) -> h (..., d_out)).

    Args:
        d_in, d_out: feature sizes.
        parameterization: "ntk" or "standard" (see module docstring).
        sigma_w, sigma_b: weight and bias standard deviations σ_w, σ_b.
        bias: whether the layer has a trainable bias.
        generator: random generator for the initialization.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        parameterization: Parameterization = Parameterization.NTK,
        sigma_w: float = math.sqrt(2.0),
        sigma_b: float = 0.0,
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.parameterization = Parameterization(parameterization)
        self.sigma_w, self.sigma_b = float(sigma_w), float(sigma_b)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        _init(self, d_in, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.weight_scale * F.linear(x, self.weight)
        return h if self.bias is None else h + self.bias_scale * self.bias

    def extra_repr(self) -> str:
        d_out, d_in = self.weight.shape
        return (
            f"{d_in}, {d_out}, {self.parameterization.value}, sigma_w={self.sigma_w:g}, "
            f"sigma_b={self.sigma_b:g}, bias={self.bias is not None}"
        )


class Conv(nn.Module):
    """k×k (or length-k, ``dims=1``) convolution, stride 1, zero "same" padding (odd k), in NTK
    or standard form.

    ``h = weight_scale · W ∗ x + bias_scale · b`` with fan_in = C_in·k^dims. Shapes:
    x (N, C_in, H, W) -> h (N, C_out, H, W); with ``dims=1``, x (N, C_in, L) -> h (N, C_out, L).
    docs/conventions.md states the 2-d layer; the 1-d one is the same with one spatial axis.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 3,
        *,
        dims: int = 2,
        parameterization: Parameterization = Parameterization.NTK,
        sigma_w: float = math.sqrt(2.0),
        sigma_b: float = 0.0,
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size: expected an odd size for 'same' padding, got {kernel_size}"
            )
        if dims not in (1, 2):
            raise ValueError(f"dims: expected 1 or 2 spatial axes, got {dims!r}")
        self.parameterization = Parameterization(parameterization)
        self.sigma_w, self.sigma_b = float(sigma_w), float(sigma_b)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, *(kernel_size,) * dims))
        self.bias = nn.Parameter(torch.empty(c_out)) if bias else None
        _init(self, c_in * kernel_size**dims, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.weight.dim() - 2
        conv = F.conv1d if dims == 1 else F.conv2d
        h = self.weight_scale * conv(x, self.weight, padding=self.padding)
        if self.bias is None:
            return h
        return h + self.bias_scale * self.bias.view(-1, *(1,) * dims)

    def extra_repr(self) -> str:
        c_out, c_in, k = self.weight.shape[:3]
        dims = "" if self.weight.dim() == 4 else ", dims=1"
        return (
            f"{c_in}, {c_out}, kernel_size={k}{dims}, {self.parameterization.value}, "
            f"sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g}, bias={self.bias is not None}"
        )


class ActivationLayer(nn.Module):
    """Applies an activation φ elementwise; parameter-free."""

    def __init__(self, activation: str | Elementwise | Activation) -> None:
        super().__init__()
        self.activation = resolve_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation.fn(x)

    def extra_repr(self) -> str:
        return self.activation.name
