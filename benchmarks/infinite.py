"""Throughput of `infinite_kernels`: NNGP and NTK of an MLP, depth 5, NTK parameterization.

    python benchmarks/infinite.py

ReLU (closed form) at N = 8000 and tanh (Gauss–Hermite, default degree 64) at N = 500, on
N × 64 standard Gaussian inputs with x2 = None. "entries/s" counts the N² entries of the
matrix (the symmetric upper half is computed, the lower half mirrored).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ntkscope.kernels.infinite import infinite_kernels
from ntkscope.kernels.infinite_width import infinite_width
from ntkscope.models.layers import Dense

CASES = [("relu", 8000), ("tanh", 500)]
DEPTH, FEATURES = 5, 64


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, depth {DEPTH}")
    generator = torch.Generator().manual_seed(0)
    for activation, n in CASES:
        x = torch.randn(n, FEATURES, generator=generator)
        infinite_kernels(x[:64], depth=DEPTH, activation=activation)  # warm-up
        start = time.perf_counter()
        infinite_kernels(x, depth=DEPTH, activation=activation)
        seconds = time.perf_counter() - start
        print(f"{activation:5s} N={n:5d}: {seconds:7.2f} s, {n * n / seconds:10.3g} entries/s")


class _ResidualLayerNormMLP(nn.Module):
    """Dense, then DEPTH − 1 blocks h + Dense(relu(LayerNorm(h))), relu, Dense readout: the
    same number of hidden layers (DEPTH) as the plain MLP it is timed against."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.inp = Dense(FEATURES, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(DEPTH - 1))
        self.blocks = nn.ModuleList(Dense(width, width) for _ in range(DEPTH - 1))
        self.out = Dense(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for norm, block in zip(self.norms, self.blocks, strict=True):
            h = h + block(torch.relu(norm(h)))
        return self.out(torch.relu(h))


def generality(n: int = 3000, repeats: int = 3) -> None:
    """Cost of generality: `infinite_width` of a residual LayerNorm ReLU MLP against
    `infinite_kernels` of a plain ReLU MLP of the same depth (target ≤ 2×), alternating."""
    x = torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(1))
    kernel_fn = infinite_width(_ResidualLayerNormMLP())
    runs = {
        "infinite_kernels, plain MLP": lambda: infinite_kernels(x, depth=DEPTH),
        "infinite_width, residual LayerNorm MLP": lambda: kernel_fn(x),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["infinite_kernels, plain MLP"]
    for name, seconds in best.items():
        print(f"{name:40s} N={n}: {seconds:6.2f} s, {n * n / seconds:10.3g} entries/s, "
              f"{seconds / base:5.2f}× the plain MLP")  # fmt: skip


if __name__ == "__main__":
    main()
    generality()
