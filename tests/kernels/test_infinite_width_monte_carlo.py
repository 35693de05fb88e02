"""`infinite_width` of plain torch networks (standard parameterization) and of ntkscope's
NTK-parameterized 1-d `Conv` against Monte Carlo.

For each network, the mean eNTK over 64 seeds at width 1024 is compared with the mean over
the same 64 models of ``infinite_width(model)`` (each model's σ_w², σ_b² are read from its
own parameters; the first layers have few weights, so one model's reading fluctuates by
~1-4% — averaging over the same models removes that from the comparison).

Tolerance 3% (relative Frobenius), derived: (i) the finite-width bias of E[Θ̂] is
O(depth/n) (Hanin & Nica 2019; Dyer & Gur-Ari 2019), ≲ 1% at n = 1024 for these
2–3-layer networks (the LayerNorm tangent terms that `_program_ops.norm` drops are
O(1/√n) for one seed but O(1/n) in the mean over seeds, so they are part of this bias);
(ii) the Monte-Carlo error: single-seed eNTKs are 2–7% from the limit
at this width (measured), so the mean over 64 seeds has a standard error ≲ 0.9%; (i) +
2·(ii) < 3%. The test also checks the reported standard error against that budget. A
wrong rule (a missed residual branch, the LayerNorm affine terms, a fan-in in the standard
NTK, a pooling window) moves the kernel by 10–100%.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkscope as ns
from networks import Conv1dNet, NtkConv1dNet
from reference import relative_error

WIDTH, SEEDS, TOLERANCE = 1024, 64, 0.03


class ResidualLayerNorm(nn.Module):
    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.inp, self.norm = nn.Linear(d, width), nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.fc2(nn.functional.gelu(self.fc1(self.norm(h))))
        return self.out(h)


class AdaptivePoolCNN(nn.Module):
    def __init__(self, c: int, width: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, width, 3, padding="same")
        self.c2 = nn.Conv2d(width, width, 1)
        self.pool, self.out = nn.AdaptiveAvgPool2d(2), nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.c2(torch.relu(self.c1(x))))
        return self.out(self.pool(h).flatten(1))


class ConcatMLP(nn.Module):
    """Feature groups of a quarter and three quarters of the width, concatenated."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(d, width // 4), nn.Linear(d, width - width // 4)
        self.fc, self.out = nn.Linear(width, width), nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        return self.out(torch.tanh(self.fc(h)))


class ResidualPostNorm(nn.Module):
    """The README's diagnose example with one output: h + GELU(W LN(h)), whose branches are
    independent (the GELU branch has its own fresh layer W) but not zero-mean."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.embed, self.norm = nn.Linear(d, width), nn.LayerNorm(width)
        self.hidden, self.out = nn.Linear(width, width), nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.out(h + nn.functional.gelu(self.hidden(self.norm(h))))


class PostActivationNorm(nn.Module):
    """Linear → Linear → GELU → LayerNorm → Linear → ReLU → LayerNorm → Linear: each norm
    centres features of mean E[φ(u)] ≠ 0 (measured: 0.6%, standard error 0.9%). The first
    GELU follows a layer of fan-in n: right after the first layer, whose fan-in is the 4
    input features and whose weights are uniform, the pre-activations are not Gaussian at
    any width, and the same network without ``inp`` was 1.9% (width 1024) and 2.0% (width
    256) from the limit."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.inp, self.fc1 = nn.Linear(d, width), nn.Linear(width, width)
        self.fc2, self.out = nn.Linear(width, width), nn.Linear(width, 1)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(nn.functional.gelu(self.fc1(self.inp(x))))
        return self.out(self.norm2(torch.relu(self.fc2(h))))


class ActivationPlusInput(nn.Module):
    """h + GELU(h): branches that share their features (Stein's lemma,
    `_program_ops.add_shared`; both orders and signs are checked against a recursion in
    tests/kernels/test_infinite_width_norm.py)."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.inp, self.fc = nn.Linear(d, width), nn.Linear(width, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.inp(x))
        return self.out(h + nn.functional.gelu(h))


def build(network: type[nn.Module], channels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return network(channels, WIDTH)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("network", "shape"),
    [
        (ResidualLayerNorm, (6, 4)),
        (Conv1dNet, (4, 2, 6)),
        (NtkConv1dNet, (4, 2, 6)),
        (AdaptivePoolCNN, (3, 2, 4, 4)),
        (ConcatMLP, (6, 4)),
        (ResidualPostNorm, (6, 4)),
        (PostActivationNorm, (6, 4)),
        (ActivationPlusInput, (6, 4)),
    ],
)
def test_mean_entk_approaches_the_infinite_ntk(network, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    result = ns.monte_carlo_kernels(lambda seed: build(network, shape[1], seed), x, samples=SEEDS)
    limit = torch.stack(
        [ns.infinite_width(build(network, shape[1], s))(x)[1] for s in range(SEEDS)]
    ).mean(0)
    error, distance = float(result.ntk_se.norm() / limit.norm()), relative_error(result.ntk, limit)
    print(f"{network.__name__}: distance {distance:.4f}, standard error {error:.4f}")
    assert error < 0.01  # (ii) of the docstring
    assert distance < TOLERANCE
