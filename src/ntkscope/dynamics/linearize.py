"""The linearized network (Lee et al. 2019, "Wide neural networks of any depth evolve as
linear models under gradient descent"; docs/conventions.md):

    f_lin(x; θ) = f(x; θ_0) + ∇_θ f(x; θ_0) · (θ − θ_0)

computed with one forward-mode Jacobian-vector product (``torch.func.jvp``) per call, so
no Jacobian is stored. For models with an op that has no forward-mode rule (LSTM in
float32, fused attention kernels), the product J·δ comes from two reverse passes instead
(the "double-VJP" trick): u ↦ Jᵀu is linear in u, so J·δ = ∂(δ · Jᵀu)/∂u. When an op
has no double-backward either (CPU flash attention), the per-example Jacobians J(x) are
formed by one backward pass per example and output and multiplied with δ. Its eNTK is the
eNTK of the network at θ_0, for every θ.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp

from ntkscope import _batch
from ntkscope._batch import Batch, OutputSelector
from ntkscope.kernels._functional import FunctionalModel, Params
from ntkscope.kernels._generic import AutogradStrategy

PRODUCTS = ("jvp", "double-vjp", "autograd")
"""How J·δ is computed, fastest first; `LinearizedModel` keeps the first that works."""


def _double_vjp(f, theta0: Params, delta: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(θ_0), J·δ)`` by two reverse passes; differentiable in δ (Pearlmutter-style
    transposition of the linear map u ↦ Jᵀu)."""
    theta = {name: t.detach().requires_grad_(True) for name, t in theta0.items()}
    with torch.enable_grad():
        out = f(theta)
        u = torch.zeros_like(out, requires_grad=True)
        transposed = torch.autograd.grad(
            out, list(theta.values()), u, create_graph=True, allow_unused=True
        )
        pairs = [(g, delta[n]) for g, n in zip(transposed, theta, strict=True) if g is not None]
        (change,) = torch.autograd.grad(
            [g for g, _ in pairs], u, [d for _, d in pairs], create_graph=True, allow_unused=True
        )
    return out.detach(), torch.zeros_like(out) if change is None else change


class LinearizedModel(nn.Module):
    """``f_lin(x; θ)`` of ``model`` around its current parameters θ_0, trainable in θ.

    The module owns a copy θ of the model's trainable parameters (starting at θ_0), in
    ``linear_parameters`` in the order of ``names``; the model itself is not changed.
    Frozen parameters and buffers stay those of the model. ``x`` is a batch (a tensor, a
    tuple or a mapping of tensors, as in `ntkscope.empirical_ntk`); ``output`` selects
    what is linearized from the model's return value. Outputs have shape (N, O).
    """

    def __init__(self, model: nn.Module, output: OutputSelector | None = None) -> None:
        super().__init__()
        live = FunctionalModel(model, output=output)  # θ shares the model's storage
        self._theta0 = {n: t.clone() for n, t in live.theta.items()}
        # every product differentiates at this copy, which training the model leaves alone
        self._functional = FunctionalModel(model, params=self._theta0, output=output)
        self.names = list(self._theta0)
        self.linear_parameters = nn.ParameterList(
            nn.Parameter(t.clone()) for t in self._theta0.values()
        )
        self.product = PRODUCTS[0]
        """How J·δ is computed (`PRODUCTS`): the first that worked on this model."""

    def forward(self, x: Batch) -> torch.Tensor:
        delta = {
            name: p - self._theta0[name]
            for name, p in zip(self.names, self.linear_parameters, strict=True)
        }
        remaining = PRODUCTS[PRODUCTS.index(self.product) :]
        for product in remaining[:-1]:
            try:
                out, change = self._product(product, x, delta)
            except (NotImplementedError, RuntimeError):  # an op lacks this kind of derivative
                continue
            self.product = product
            return out + change
        self.product = remaining[-1]
        out, change = self._product(self.product, x, delta)
        return out + change

    def _product(self, product: str, x: Batch, delta: Params) -> tuple[torch.Tensor, ...]:
        """``(f(x; θ_0), J(x)·δ)`` by ``product``."""

        def f(theta):
            return self._functional(theta, x)

        if product == "jvp":
            return jvp(f, (self._theta0,), (delta,))
        if product == "double-vjp":
            return _double_vjp(f, self._theta0, delta)
        with torch.no_grad():
            out = f(self._theta0)
        if _batch.size(x) == 0:
            return out, torch.zeros_like(out)
        jacobian = AutogradStrategy(self._functional, out.shape[1], full=False).features(x)
        flat = torch.cat([delta[name].reshape(-1) for name in self._theta0])
        return out, jacobian @ flat


def linearize(model: nn.Module, output: OutputSelector | None = None) -> LinearizedModel:
    """The linearization of ``model`` around its current parameters (see `LinearizedModel`)."""
    return LinearizedModel(model, output)
