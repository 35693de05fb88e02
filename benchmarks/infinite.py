"""Throughput of `infinite_kernels`: NNGP and NTK of an MLP, depth 5, NTK parameterization.

    python benchmarks/infinite.py

ReLU (closed form) at N = 8000 and tanh (Gauss–Hermite, default degree 64) at N = 500, on
N × 64 standard Gaussian inputs with x2 = None. "entries/s" counts the N² entries of the
matrix (the symmetric upper half is computed, the lower half mirrored).
"""

from __future__ import annotations

import time

import torch

from ntkscope.kernels.infinite import infinite_kernels

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


if __name__ == "__main__":
    main()
