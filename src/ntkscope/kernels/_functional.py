"""A module seen as a function ``f(θ, x) -> (N, O)`` of its trainable parameters θ."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

Params = dict[str, torch.Tensor]


class FunctionalModel:
    """Wraps a module for the eNTK: trainable parameters θ, everything else fixed.

    θ are the parameters with ``requires_grad=True``; frozen parameters and buffers are
    held fixed. ``params`` replaces some or all of θ (same names and shapes as
    ``model.named_parameters()``) without touching the module. Outputs are flattened to
    (N, O): a model returning (N,) has O = 1.
    """

    def __init__(self, model: nn.Module, params: Mapping[str, torch.Tensor] | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.module = model
        named = dict(model.named_parameters())
        trainable = {name: p for name, p in named.items() if p.requires_grad}
        if not trainable:
            raise ValueError(
                "model: has no trainable parameters (every parameter has requires_grad=False)"
            )
        self.theta = {name: p.detach() for name, p in trainable.items()}
        self.theta.update(self._checked(params or {}, named, trainable))
        self.fixed = {n: p.detach() for n, p in named.items() if n not in trainable}
        self.fixed.update(dict(model.named_buffers()))
        for name, module in model.named_modules():
            if isinstance(module, _BatchNorm) and module.training:
                raise ValueError(
                    f"model: layer {name!r} ({type(module).__name__}) is in training mode, "
                    "which couples the examples of a batch; call model.eval() first"
                )
        first = next(iter(self.theta.values()))
        self.dtype, self.device = first.dtype, first.device

    @staticmethod
    def _checked(params: Mapping, named: dict, trainable: dict) -> Params:
        if not isinstance(params, Mapping):
            raise TypeError(
                f"params: expected a mapping name -> tensor, got {type(params).__name__}"
            )
        for name, value in params.items():
            if name not in trainable:
                what = "a frozen parameter" if name in named else "not a parameter of the model"
                raise ValueError(f"params: {name!r} is {what}")
            like = named[name]
            if not isinstance(value, torch.Tensor) or value.shape != like.shape:
                raise ValueError(f"params: {name!r} must be a tensor of shape {tuple(like.shape)}")
            if value.dtype != like.dtype or value.device != like.device:
                raise TypeError(
                    f"params: {name!r} has dtype/device {value.dtype}/{value.device}, the "
                    f"model's parameter {like.dtype}/{like.device}; convert with .to(...)"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"params: {name!r} contains NaN or infinite values")
        return {name: value.detach() for name, value in params.items()}

    @property
    def n_params(self) -> int:
        """Number of trainable scalars P."""
        return sum(t.numel() for t in self.theta.values())

    def __call__(self, theta: Params, x: torch.Tensor) -> torch.Tensor:
        """f(θ, x) as an (N, O) tensor."""
        out = functional_call(self.module, {**self.fixed, **theta}, (x,))
        return out.reshape(x.shape[0], -1)

    def check_inputs(self, x: torch.Tensor, argument: str) -> int:
        """Run one example; return O. Errors name ``argument`` instead of torch internals."""
        if x.dtype != self.dtype or x.device != self.device:
            raise TypeError(
                f"{argument}: dtype/device {x.dtype}/{x.device} differ from the model's "
                f"parameters {self.dtype}/{self.device}; convert with .to(...)"
            )
        try:
            with torch.no_grad():
                out = functional_call(self.module, {**self.fixed, **self.theta}, (x[:1],))
        except Exception as error:  # the model's own error, re-raised with the argument named
            raise ValueError(
                f"{argument}: the model cannot be applied to inputs of shape "
                f"{tuple(x.shape)}: {error}"
            ) from error
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != 1:
            raise TypeError(
                "model: expected the forward pass to return one tensor of shape (N, ...), got "
                f"{type(out).__name__}{tuple(getattr(out, 'shape', ()))}"
            )
        return out[0].numel()
