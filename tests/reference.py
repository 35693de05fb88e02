"""Brute-force references, simple enough to be obviously right."""

from __future__ import annotations

import torch
from torch import nn


def brute_force_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, O, P): one autograd backward per example and output, example fed alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for n in range(x.shape[0]):
        out = model(x[n : n + 1]).reshape(-1)
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
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    mode: str = "trace",
    diagonal: bool = False,
) -> torch.Tensor:
    """Θ̂ from explicit Jacobians, by the definition in CONVENTIONS.md."""
    j1 = brute_force_jacobian(model, x1)
    j2 = j1 if x2 is None else brute_force_jacobian(model, x2)
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
