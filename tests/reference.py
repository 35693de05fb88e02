"""Brute-force references, simple enough to be obviously right."""

from __future__ import annotations

import math

import torch
from torch import nn


def _example(x, n: int):
    """Example n of a batch (tensor, tuple or dict of tensors), as a batch of one."""
    if isinstance(x, dict):
        return {key: value[n : n + 1] for key, value in x.items()}
    if isinstance(x, tuple):
        return tuple(value[n : n + 1] for value in x)
    return x[n : n + 1]


def _call(model: nn.Module, x):
    if isinstance(x, dict):
        return model(**x)
    return model(*x) if isinstance(x, tuple) else model(x)


def _size(x) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, tuple) else x
    return first.shape[0]


def brute_force_jacobian(model: nn.Module, x, output=None) -> torch.Tensor:
    """(N, O, P): one autograd backward per example and output, example fed alone.

    ``x`` is a tensor, a tuple (``model(*x)``) or a dict (``model(**x)``); ``output``
    selects the tensor to differentiate from the model's return value (default: itself).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    select = output or (lambda out: out)
    rows = []
    for n in range(_size(x)):
        out = select(_call(model, _example(x, n))).reshape(-1)
        per_output = []
        for o in range(out.numel()):
            grads = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
            flat = [
                torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)
            ]
            per_output.append(torch.cat([g.reshape(-1) for g in flat]))
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


def brute_force_ntk(
    model: nn.Module,
    x1,
    x2=None,
    *,
    mode: str = "trace",
    diagonal: bool = False,
    output=None,
) -> torch.Tensor:
    """Θ̂ from explicit Jacobians, by the definition in CONVENTIONS.md."""
    j1 = brute_force_jacobian(model, x1, output)
    j2 = j1 if x2 is None else brute_force_jacobian(model, x2, output)
    full = torch.einsum("nap,mbp->nmab", j1, j2)
    if diagonal:
        full = torch.stack([full[n, n] for n in range(full.shape[0])])
        return full if mode == "full" else full.diagonal(dim1=1, dim2=2).mean(-1)
    return full if mode == "full" else full.diagonal(dim1=2, dim2=3).mean(-1)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖_F / ‖b‖_F (CONVENTIONS.md: relative kernel distance); ‖a − b‖_F if b = 0."""
    assert a.shape == b.shape, (a.shape, b.shape)
    difference, scale = torch.linalg.norm((a - b).flatten()), torch.linalg.norm(b.flatten())
    return float(difference / scale if scale > 0 else difference)


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2))


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


SCALAR = {  # φ and φ' written out by hand, for the quadrature references only
    "relu": (lambda x: max(x, 0.0), lambda x: float(x > 0)),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
    "identity": (lambda x: x, lambda x: 1.0),
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x)),
    "gelu": (
        lambda x: x * _normal_cdf(x),
        lambda x: _normal_cdf(x) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi),
    ),
    "sin": (math.sin, math.cos),
}
TORCH = {"sin": lambda x: torch.sin(x)}  # a user callable (derivative by autograd)


def explicit_jacobian(model, x) -> torch.Tensor:
    """J = ∂f(X).reshape(-1)/∂θ, (N·O, P), rows n·O + o, by torch.autograd.functional.jacobian
    over every parameter (the model is not changed)."""
    names = [n for n, p in model.named_parameters()]

    def f(*params):
        return torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,))

    blocks = torch.autograd.functional.jacobian(
        lambda *p: f(*p).reshape(-1), tuple(p.detach() for p in model.parameters())
    )
    return torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1)
