"""Finite-width eNTKs converge to `infinite_kernels` (Jacot et al. 2018; Lee et al. 2019).

Monte-Carlo checks over independent initializations of NTK-parameterized MLPs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntkscope as ns
from ntkscope import infinite_kernels
from reference import relative_error

DEPTH, D_IN, N = 2, 8, 6


def inputs() -> torch.Tensor:
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def sample_kernels(width: int, seeds: int, activation: str, sigma_b: float = 0.0):
    """eNTKs (seeds, N, N) and outputs (seeds, N) of independent float64 MLPs."""
    x, kernels, outputs = inputs(), [], []
    for seed in range(seeds):
        model = ns.models.mlp(
            D_IN, width, DEPTH, 1, activation=activation, sigma_b=sigma_b, seed=seed
        ).double()
        kernels.append(ns.empirical_ntk(model, x, method="structured"))
        with torch.no_grad():
            outputs.append(model(x)[:, 0])
    return torch.stack(kernels), torch.stack(outputs)


@pytest.mark.slow  # a scientific check (minutes on one core), not a unit test
@pytest.mark.parametrize(("activation", "sigma_b"), [("relu", 0.0), ("erf", 0.2)])
def test_mean_entk_of_wide_networks_is_the_infinite_ntk(activation, sigma_b):
    """100 networks of width 1024: each eNTK deviates by O(1/√1024) ≈ 5-10% (depth 2), their
    mean by ~1% plus an O(1/width) bias, so the mean is within 3% (about 3 times that).
    The output second moment E[f(x)²] estimates the NNGP diagonal Σ^{L+1}(x, x); with 100
    samples of a Gaussian its relative error is ~√(2/100) ≈ 14%, so 35% is a 2.5σ bound."""
    kernels, outputs = sample_kernels(1024, 100, activation, sigma_b)
    nngp, ntk = infinite_kernels(inputs(), depth=DEPTH, activation=activation, sigma_b=sigma_b)
    assert relative_error(kernels.mean(0), ntk) <= 0.03
    second_moment = (outputs**2).mean(0)
    assert relative_error(second_moment, nngp.diagonal()) <= 0.35


@pytest.mark.slow
def test_seed_to_seed_spread_shrinks_as_one_over_sqrt_width():
    """Std over seeds of Θ̂ ∝ width^{-1/2} (Hanin & Nica 2019 at fixed depth). With 100 seeds
    each std has ~7% relative error; across a 16× width range the fitted slope's error is
    ~0.04, so ±0.12 (3σ) around −1/2."""
    widths = [64, 128, 256, 512, 1024]
    spreads = []
    for width in widths:
        kernels, _ = sample_kernels(width, 100, "relu")
        spreads.append(float(kernels.std(0).norm() / kernels.mean(0).norm()))
    slope = np.polyfit(np.log(widths), np.log(spreads), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.12), (slope, spreads)
