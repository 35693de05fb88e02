"""Independent float64 recursions of infinite-width kernels, shared by the tests.

They run on one joint covariance over every (input, position) pair, with each layer written
as an explicit matrix map and the duals of ReLU (Cho & Saul 2009) and erf (Williams 1997)
written out from their closed forms; every variance is read off the joint matrix's
diagonal. They share no code with `ntkscope.kernels`.
"""

from __future__ import annotations

import math

import torch


def inputs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def relu_dual(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arc-cosine kernels of degree 1 and 0 on a joint covariance."""
    s = k.diagonal().sqrt()
    rho = (k / s[:, None] / s[None]).clamp(-1, 1)
    theta = torch.acos(rho)
    theta.fill_diagonal_(0.0)  # x with itself: ρ = 1 exactly (acos amplifies its rounding)
    e_ff = s[:, None] * s[None] * (torch.sin(theta) + (math.pi - theta) * rho) / (2 * math.pi)
    return e_ff, (math.pi - theta) / (2 * math.pi)


def erf_dual(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Williams' erf kernels on a joint covariance."""
    d = 1 + 2 * k.diagonal()
    det = d[:, None] * d[None]
    return 2 / math.pi * torch.asin(2 * k / det.sqrt()), 4 / math.pi / (det - 4 * k**2).sqrt()


def dense_ntk(k, t, sw2, sb2):
    nngp = sw2 * k + sb2
    return nngp, nngp + sw2 * t


def selection(n: int, length: int, out: int, stride: int, dilation: int, pad: int, delta: int):
    """Block-diagonal (n·out, n·length) matrix picking position s·i + d·δ − P (0 outside)."""
    s = torch.zeros(out, length, dtype=torch.float64)
    for i in range(out):
        j = stride * i + dilation * delta - pad
        if 0 <= j < length:
            s[i, j] = 1.0
    return torch.block_diag(*[s] * n)


def position_mean(n: int, length: int) -> torch.Tensor:
    """Block-diagonal (n, n·length) matrix of the mean over each input's positions."""
    return torch.block_diag(*[torch.full((1, length), 1 / length, dtype=torch.float64)] * n)


def same_conv_ntk(k, t, n: int, length: int, size: int, sw2: float, sb2: float):
    """A "same"-padded 1-d convolution in NTK parameterization (stride 1): with
    K̄ = 1/k Σ_δ S_δ K S_δᵀ (S_δ picks position i + δ − k//2, 0 outside) and T̄ likewise,
    Σ = σ_w² K̄ + σ_b² and Θ = Σ + σ_w² T̄."""
    mats = [selection(n, length, length, 1, 1, size // 2, d) for d in range(size)]
    k_bar = sum(m @ k @ m.T for m in mats) / size
    t_bar = sum(m @ t @ m.T for m in mats) / size
    nngp = sw2 * k_bar + sb2
    return nngp, nngp + sw2 * t_bar
