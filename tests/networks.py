"""Networks of plain torch layers shared by the infinite-width tests."""

from __future__ import annotations

import torch
from torch import nn


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
