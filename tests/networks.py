"""Networks of plain torch layers shared by the infinite-width tests."""

from __future__ import annotations

import torch
from torch import nn

from ntkscope.models.layers import Conv, Dense


class Conv1dNet(nn.Module):
    """Conv1d(k=3, pad 1) → ReLU → Conv1d(k=3, stride 2, dilation 2, pad 2) → ReLU → mean →
    Linear: plain torch layers, standard parameterization."""

    def __init__(self, c: int, width: int) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(c, width, 3, padding=1)
        self.c2 = nn.Conv1d(width, width, 3, stride=2, dilation=2, padding=2)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.out(h.mean(-1))


class NtkConv1dNet(nn.Module):
    """ntkscope `Conv` (dims=1, k=3) → ReLU → `Conv` (dims=1, k=5) → erf → mean → `Dense`:
    NTK parameterization throughout (σ_w² = 1.7, σ_b² = 0.09)."""

    def __init__(self, c: int, width: int) -> None:
        super().__init__()
        kw = dict(sigma_w=1.7**0.5, sigma_b=0.3)
        self.c1 = Conv(c, width, 3, dims=1, **kw)
        self.c2 = Conv(width, width, 5, dims=1, **kw)
        self.out = Dense(width, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.erf(self.c2(torch.relu(self.c1(x))))
        return self.out(h.mean(-1))
