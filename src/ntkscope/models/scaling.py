"""Output scaling of Chizat, Oyallon & Bach (2019), "On lazy training in differentiable
programming": the model

    f_α(x; θ) = α (f(x; θ) − f(x; θ_0))

starts at zero output, and trained on the loss L(f_α)/α² (equivalently, by gradient descent
with learning rate η/α² on L) it follows the same function-space dynamics at first order
for every α while its parameters move O(1/α): large α makes any network lazy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ntkscope._checks import nonnegative_real


class OutputScaled(nn.Module):
    """``α (f(x; θ) − f(x; θ_0))`` with θ trainable and a frozen copy holding θ_0.

    Attributes:
        model: the trained network f(·; θ).
        initial: a frozen copy of the model at θ_0 (parameters with requires_grad=False,
            so the eNTK and optimizers see only θ).
        alpha: the output scale α > 0.
    """

    def __init__(self, model: nn.Module, alpha: float) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.alpha = nonnegative_real(alpha, "alpha")
        if self.alpha == 0:
            raise ValueError("alpha: expected a positive output scale, got 0")
        self.model = model
        self.initial = copy.deepcopy(model).requires_grad_(False)  # θ_0, frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            start = self.initial(x)
        return self.alpha * (self.model(x) - start)


def output_scaled(model: nn.Module, alpha: float) -> OutputScaled:
    """``α (f − f_0)`` of ``model`` around its current parameters (see `OutputScaled`)."""
    return OutputScaled(model, alpha)
