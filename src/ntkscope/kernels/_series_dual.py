"""Numerical duals of activations without a closed form (provisional: Gauss–Hermite)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ntkscope.models.activations import Activation

Pair = tuple[torch.Tensor, torch.Tensor]
_DEG = 64


class SeriesDual:
    """(q1, q2, ρ) -> both expectations of ``activation`` (provisional 64² Gauss–Hermite rule)."""

    arrays = 8 * _DEG**2 + 16

    def __init__(self, activation: Activation) -> None:
        self.act = activation

    def __call__(self, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor) -> Pair:
        z, w = _hermite(_DEG)
        u = q1.sqrt().unsqueeze(-1) * z
        s2 = q2.sqrt()
        along = (s2 * rho)[..., None, None] * z[:, None]
        across = (s2 * (1 - rho * rho).sqrt())[..., None, None] * z
        v = along + across
        e_ff = (w * self.act.fn(u) * (self.act.fn(v) @ w)).sum(-1)
        e_dd = (w * self.act.derivative(u) * (self.act.derivative(v) @ w)).sum(-1)
        return e_ff, e_dd


@functools.cache
def _hermite(deg: int) -> Pair:
    z, w = np.polynomial.hermite_e.hermegauss(deg)
    return torch.tensor(z), torch.tensor(w / w.sum())
