"""Throughput of `infinite_kernels`: NNGP and NTK of an MLP, depth 5, NTK parameterization.

    python benchmarks/infinite.py
    python benchmarks/infinite.py --cpu-time  # one thread, CPU time (shared machine)

One row per function below, each printing entries/s (the N² entries of the matrix, x2 =
None: the symmetric upper half is computed, the lower half mirrored) on N × 64 standard
Gaussian inputs, timed as the best of ``REPEATS`` alternating runs so that load on a shared
machine hits every row alike:

- ``relu``: the closed form, the baseline of every ratio;
- ``tanh``, ``gelu``, ``silu``: the package's duals (certified Mehler series; GELU closed);
- ``*_gauss_hermite``: the previous rule, two-dimensional Gauss–Hermite quadrature with
  64² nodes per entry and layer (kept here only, as the baseline of the 100× target), on the
  first ``N_OLD`` inputs: at N = 500 it takes ~40 s per run (its cost per entry does not
  depend on N).

- ``residual_layernorm``: `infinite_width` of a ReLU MLP with residual blocks and LayerNorm
  of the same depth (the cost of generality: target ≥ 0.5× relu, i.e. ≤ 2× the time);
- ``post_layernorm``: `infinite_width` of an MLP with a LayerNorm right after each ReLU
  (features of nonzero mean: the norm subtracts E[relu(u)]), the same depth.

Add a row by writing one function ``(x) -> entries/s`` and listing it in ``ROWS``.

On a machine shared with other jobs, wall times mostly measure the scheduler: with
``--cpu-time`` every time is the CPU time of this process on one thread, which other jobs
disturb far less (only through the caches and memory bandwidth they share).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ntkscope.kernels.dual import Dual
from ntkscope.kernels.infinite import infinite_kernels
from ntkscope.kernels.infinite_width import infinite_width
from ntkscope.models.activations import resolve_activation
from ntkscope.models.layers import Dense

DEPTH, FEATURES, N, N_OLD, REPEATS = 5, 64, 500, 100, 2
CLOCK = time.perf_counter
"""Wall time, or the process's CPU time under ``--cpu-time``."""


def _rate(x: torch.Tensor, activation: object) -> float:
    """Entries per second of `infinite_kernels` on ``x`` (x2 = None)."""
    start = CLOCK()
    infinite_kernels(x, depth=DEPTH, activation=activation)
    return len(x) ** 2 / (CLOCK() - start)


def package(activation: str, x: torch.Tensor) -> float:
    """Entries/s with the package's dual of ``activation``."""
    return _rate(x, activation)


def gauss_hermite(activation: str, x: torch.Tensor) -> float:
    """Entries/s of the same recursion with the previous 64² Gauss–Hermite rule as the dual."""
    rule = Dual(activation, False, 8 * 64**2 + 16, _GaussHermite(activation))
    return _rate(x[:N_OLD], rule)


class _GaussHermite:
    """E[f(u) g(v)] ≈ Σ_i w_i f(u_i) Σ_j w_j g(v_ij), u_i = √q1 z_i,
    v_ij = √q2 (ρ z_i + √(1 − ρ²) z_j), 64 probabilists' Hermite nodes per dimension."""

    def __init__(self, activation: str) -> None:
        self.act = resolve_activation(activation)
        z, w = np.polynomial.hermite_e.hermegauss(64)
        self.z, self.w = torch.tensor(z), torch.tensor(w / w.sum())

    def __call__(self, q1: torch.Tensor, q2: torch.Tensor, rho: torch.Tensor):
        z, w, act = self.z, self.w, self.act
        u = q1.sqrt().unsqueeze(-1) * z
        along = (q2.sqrt() * rho)[..., None, None] * z[:, None]
        v = along + (q2.sqrt() * (1 - rho * rho).sqrt())[..., None, None] * z
        e_ff = (w * act.fn(u) * (act.fn(v) @ w)).sum(-1)
        e_dd = (w * act.derivative(u) * (act.derivative(v) @ w)).sum(-1)
        return e_ff, e_dd


class _ResidualLayerNormMLP(nn.Module):
    """Dense, then DEPTH − 1 blocks h + Dense(relu(LayerNorm(h))), relu, Dense readout: as
    many ReLU layers (DEPTH) as the plain MLP of the ``relu`` row."""

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


class _PostLayerNormMLP(nn.Module):
    """Dense, then DEPTH blocks Dense(LayerNorm(relu(h))) (the last one the readout)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.inp = Dense(FEATURES, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(DEPTH))
        self.blocks = nn.ModuleList(
            Dense(width, width if i < DEPTH - 1 else 1) for i in range(DEPTH)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for norm, block in zip(self.norms, self.blocks, strict=True):
            h = block(norm(torch.relu(h)))
        return h


def program(network: type[nn.Module], x: torch.Tensor) -> float:
    """Entries/s of `infinite_width` of ``network()`` (x2 = None)."""
    kernel_fn = infinite_width(network())
    start = CLOCK()
    kernel_fn(x)
    return len(x) ** 2 / (CLOCK() - start)


ROWS: dict[str, Callable[[torch.Tensor], float]] = {
    "relu": functools.partial(package, "relu"),
    "tanh": functools.partial(package, "tanh"),
    "gelu": functools.partial(package, "gelu"),
    "silu": functools.partial(package, "silu"),
    "tanh_gauss_hermite": functools.partial(gauss_hermite, "tanh"),
    "gelu_gauss_hermite": functools.partial(gauss_hermite, "gelu"),
    "silu_gauss_hermite": functools.partial(gauss_hermite, "silu"),
    "residual_layernorm": functools.partial(program, _ResidualLayerNormMLP),
    "post_layernorm": functools.partial(program, _PostLayerNormMLP),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-time", action="store_true", help="one thread, times are the process's CPU time"
    )
    cpu_time = parser.parse_args().cpu_time
    if cpu_time:
        global CLOCK
        CLOCK = time.process_time
        torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, depth {DEPTH}, N={N}, "
        f"load average {os.getloadavg()[0]:.1f}, {'CPU' if cpu_time else 'wall'} time"
    )
    x = torch.randn(N, FEATURES, generator=torch.Generator().manual_seed(REPEATS))
    for row in ROWS.values():
        row(x[:32])  # warm-up
    best = dict.fromkeys(ROWS, 0.0)
    for repeat in range(REPEATS):  # new inputs each time: no coefficients reused (cold runs)
        x = torch.randn(N, FEATURES, generator=torch.Generator().manual_seed(repeat))
        for name, row in ROWS.items():
            best[name] = max(best[name], row(x))
    for name, rate in best.items():
        line = f"{name:20s} {rate:10.3g} entries/s  {rate / best['relu']:8.2g}× relu"
        old = f"{name}_gauss_hermite"
        if old in best:
            line += f"  {rate / best[old]:7.0f}× the Gauss–Hermite rule"
        print(line)


if __name__ == "__main__":
    main()
