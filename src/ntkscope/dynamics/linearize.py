"""The linearized network (Lee et al. 2019, "Wide neural networks of any depth evolve as
linear models under gradient descent"; docs/conventions.md):

    f_lin(x; θ) = f(x; θ_0) + ∇_θ f(x; θ_0) · (θ − θ_0)

computed with one forward-mode Jacobian-vector product (``torch.func.jvp``) per call, so
no Jacobian is stored. Its eNTK is the eNTK of the network at θ_0, for every θ.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp

from ntkscope.kernels._functional import FunctionalModel


class LinearizedModel(nn.Module):
    """``f_lin(x; θ)`` of ``model`` around its current parameters θ_0, trainable in θ.

    The module owns a copy θ of the model's trainable parameters (starting at θ_0), in
    ``linear_parameters`` in the order of ``names``; the model itself is not changed.
    Frozen parameters and buffers stay those of the model. Outputs have shape (N, O).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._functional = FunctionalModel(model)
        self.names = list(self._functional.theta)
        self._theta0 = {n: t.clone() for n, t in self._functional.theta.items()}
        self.linear_parameters = nn.ParameterList(
            nn.Parameter(t.clone()) for t in self._theta0.values()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = {
            name: p - self._theta0[name]
            for name, p in zip(self.names, self.linear_parameters, strict=True)
        }
        out, change = jvp(lambda theta: self._functional(theta, x), (self._theta0,), (delta,))
        return out + change


def linearize(model: nn.Module) -> LinearizedModel:
    """The linearization of ``model`` around its current parameters (see `LinearizedModel`)."""
    return LinearizedModel(model)
