"""Kernel ridge regression at n = 5,000: one reused factorization against a solve per ridge.

    python benchmarks/kernel_ridge.py [n]

The infinite NTK of a depth-2 ReLU MLP on n Gaussian inputs (float64), 10 target columns,
500 test rows and the 8 positive ridges of `select_ridge`'s grid. Baseline: what a plain script
does, ``torch.linalg.solve(K + λI, Y)`` once per ridge (an LU factorization each time).
Against it, in the same run:

- one eigendecomposition serving every ridge and target (what `KernelRidge.path` does for
  grids of `EIGH_GRID` ridges or more);
- ``KernelRidge.predict`` per ridge: one Cholesky per ridge, reused by every target (what
  `KernelRidge.path` and `select_ridge` do for smaller grids).

Prints seconds and the ratio to the baseline, and the largest difference between the
predictions (they must agree to float64 rounding). Time grows as n³; memory is a few n × n
float64 matrices (200 MB each at n = 5,000).
"""

from __future__ import annotations

import sys
import time

import torch

from ntkscope import infinite_kernels
from ntkscope.data import load
from ntkscope.dynamics import KernelRidge
from ntkscope.dynamics.ridge import DEFAULT_RIDGES


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(n: int = 5000) -> None:
    x = load("gaussian", n + 500, d=32, dtype=torch.float64, seed=1).x
    _, kernel = infinite_kernels(x, depth=2)
    k, ks = kernel[:n, :n], kernel[n:, :n]
    y = torch.randn(n, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scale = float(k.diagonal().mean())
    ridges = [r * scale for r in DEFAULT_RIDGES]
    eye = torch.eye(n, dtype=torch.float64)

    baseline, t_base = _timed(lambda: torch.stack([ks @ torch.linalg.solve(k + r * eye, y)
                                                   for r in ridges]))  # fmt: skip
    model = KernelRidge(k, y)
    path, t_path = _timed(lambda: ks @ model._spectral_weights(torch.tensor(ridges)))
    each, t_each = _timed(lambda: torch.stack([model.predict(ks, r) for r in ridges]))
    print(f"n = {n}, {len(ridges)} ridges, 10 targets, 500 test rows (float64)")
    print(f"solve per ridge (baseline)      {t_base:7.2f} s")
    print(f"one eigh for the grid           {t_path:7.2f} s   ratio {t_path / t_base:.2f}")
    print(f"KernelRidge.predict (Cholesky)  {t_each:7.2f} s   ratio {t_each / t_base:.2f}")
    scale_out = float(baseline.abs().max())
    print(
        f"largest relative difference: eigh {float((path - baseline).abs().max()) / scale_out:.1e},"
        f" Cholesky {float((each - baseline).abs().max()) / scale_out:.1e}"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
