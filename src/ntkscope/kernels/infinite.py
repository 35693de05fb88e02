"""Infinite-width NNGP and NTK kernels of a multilayer perceptron (NTK parameterization).

The recursion of CONVENTIONS.md (Neal 1996; Lee et al. 2018, "Deep Neural Networks as
Gaussian Processes"; Jacot, Gabriel & Hongler 2018, "Neural Tangent Kernel"), identical to
neural-tangents' ``stax.serial(*[Dense(W_std=σ_w, b_std=σ_b), φ] * L, Dense(...))``:

    Σ¹(x, x')      = σ_w² x·x' / n_0 + σ_b²
    Σ^{l+1}(x, x') = σ_w² E[φ(u) φ(v)] + σ_b²,   Σ̇^{l+1}(x, x') = σ_w² E[φ'(u) φ'(v)]
                     (u, v) ~ N(0, [[Σ^l(x, x), Σ^l(x, x')], [Σ^l(x, x'), Σ^l(x', x')]])
    Θ¹ = Σ¹,        Θ^{l+1} = Σ^{l+1} + Θ^l · Σ̇^{l+1}

Each entry depends on its own Σ^l(x, x') and on the diagonal variances Σ^l(x, x) only, so
the variances of all points are computed once (a 1-D recursion) and the matrix is filled
tile by tile, each tile running the whole depth recursion for its entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ntkscope._checks import finite_batch, nonnegative_int, nonnegative_real, positive_int
from ntkscope.kernels._tiling import resolve_budget
from ntkscope.kernels.dual import (
    CLOSED_FORMS,
    DEFAULT_QUADRATURE_DEGREE,
    ActivationLike,
    Pair,
    dual,
    dual_diagonal,
)
from ntkscope.models.activations import Activation, resolve_activation

_CLOSED_FORM_ARRAYS = 16
"""float64 values held per matrix entry while a closed-form tile is computed (an upper bound)."""
_QUADRATURE_ARRAYS = 8
"""deg × deg float64 arrays held per entry by the quadrature: v, φ(v), φ'(v) and the
temporaries of φ' (measured peak: 4.3 for tanh, sigmoid and autograd callables, 7.3 for gelu)."""
_CPU_TILE_BYTES = 2**23
"""Largest tile working memory on CPU: tiles that fit in cache ran fastest (measured)."""


@dataclass(frozen=True)
class _Recursion:
    """The layer recursion of CONVENTIONS.md for one network configuration."""

    activation: Activation
    depth: int
    weight_var: float  # σ_w²
    bias_var: float  # σ_b²
    deg: int

    def diagonal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ^1..Σ^{L+1} on the diagonal, shape (L + 1, N); Θ^{L+1} on the diagonal, (N,))."""
        nngp = self.weight_var * x.square().mean(1) + self.bias_var
        ntk, variances = nngp.clone(), [nngp]
        for _ in range(self.depth):
            e_ff, e_dd = dual_diagonal(self.activation, nngp, deg=self.deg)
            nngp = self.weight_var * e_ff + self.bias_var
            ntk = nngp + ntk * (self.weight_var * e_dd)
            variances.append(nngp)
        return torch.stack(variances), ntk

    def tile(self, x1: torch.Tensor, x2: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> Pair:
        """(Σ^{L+1}, Θ^{L+1}) for rows x1 and columns x2 with diagonal variances q1, q2."""
        nngp = self.weight_var / x1.shape[1] * (x1 @ x2.T) + self.bias_var
        ntk = nngp
        for layer in range(self.depth):
            e_ff, e_dd = dual(
                self.activation, q1[layer, :, None], q2[layer, None, :], nngp, deg=self.deg
            )
            nngp = e_ff.mul_(self.weight_var).add_(self.bias_var)
            ntk = torch.addcmul(nngp, ntk, e_dd, value=self.weight_var)
        return nngp, ntk

    def entry_bytes(self) -> int:
        """Working memory per matrix entry of a tile."""
        if self.depth == 0 or self.activation.builtin in CLOSED_FORMS:
            return 8 * _CLOSED_FORM_ARRAYS
        return 8 * (_QUADRATURE_ARRAYS * self.deg**2 + 4 * self.deg + _CLOSED_FORM_ARRAYS)


def infinite_kernels(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    depth: int,
    activation: ActivationLike = "relu",
    sigma_w: float = 2**0.5,
    sigma_b: float = 0.0,
    diagonal: bool = False,
    memory_budget: int | str | None = None,
    quadrature_degree: int = DEFAULT_QUADRATURE_DEGREE,
) -> Pair:
    """NNGP kernel Σ^{L+1} and NTK Θ^{L+1} of an infinitely wide MLP with L = ``depth``.

    Recursion and parameterization: see the module docstring (CONVENTIONS.md). Depth 0 is
    the linear model f(x) = σ_w/√n_0 · W x + σ_b b, whose NNGP and NTK are both Σ¹. Duals of
    ReLU, erf and identity are exact; other activations use Gauss–Hermite quadrature whose
    accuracy `ntkscope.kernels.dual` states.

    Args:
        x1: inputs (N1, n_0), any float dtype; computed in float64 on x1's device.
        x2: inputs (N2, n_0) on the same device, or None for x2 = x1 (then the result is
            exactly symmetric and only its upper triangle of tiles is computed).
        depth: number of hidden layers L ≥ 0.
        activation: "relu", "erf", "tanh", "sigmoid", "gelu", "identity", or a callable.
        sigma_w: weight standard deviation σ_w ≥ 0.
        sigma_b: bias standard deviation σ_b ≥ 0.
        diagonal: return only Σ^{L+1}(x, x) and Θ^{L+1}(x, x) for the rows of x1.
        memory_budget: bytes (or a string such as "2GB") of working memory for the tiles,
            beyond the inputs, the outputs and the O(N · (depth + deg)) diagonal
            recursion; at least one entry is computed per tile. Default: a quarter of the
            free memory of x1's device. A quadrature tile needs about 8 · deg² · 8 bytes
            per entry. On CPU, tiles are also capped at 8 MiB, which keeps them in cache
            (fastest, measured).
        quadrature_degree: Gauss–Hermite nodes per dimension (cost and memory ∝ deg²).

    Returns:
        (nngp, ntk): float64 tensors of shape (N1, N2), or (N1,) when ``diagonal``.

    Raises:
        TypeError, ValueError: naming the offending argument.
    """
    rec = _Recursion(
        activation=resolve_activation(activation),
        depth=nonnegative_int(depth, "depth"),
        weight_var=nonnegative_real(sigma_w, "sigma_w") ** 2,
        bias_var=nonnegative_real(sigma_b, "sigma_b") ** 2,
        deg=positive_int(quadrature_degree, "quadrature_degree"),
    )
    x1 = _inputs(x1, "x1")
    if diagonal and x2 is not None:
        raise ValueError("x2: must be None when diagonal=True (the diagonal pairs x1 with itself)")
    if x2 is not None:
        x2 = _inputs(x2, "x2")
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(
                f"x2: has {x2.shape[1]} features but x1 has {x1.shape[1]} "
                f"(shapes {tuple(x2.shape)} and {tuple(x1.shape)})"
            )
        if x2.device != x1.device:
            raise ValueError(f"x2: is on {x2.device} but x1 is on {x1.device}")
    budget = resolve_budget(memory_budget, x1.device)
    q1, ntk1 = rec.diagonal(x1)
    if diagonal:
        return q1[-1].clone(), ntk1
    if x1.device.type == "cpu":
        budget = min(budget, _CPU_TILE_BYTES)
    entries = max(1, budget // rec.entry_bytes())
    if x2 is None:
        nngp, ntk = _symmetric(rec, x1, q1, entries)
        nngp.diagonal().copy_(q1[-1])  # the same values as diagonal=True, bit for bit
        ntk.diagonal().copy_(ntk1)
        return nngp, ntk
    return _rectangular(rec, x1, x2, q1, rec.diagonal(x2)[0], entries)


def _rectangular(
    rec: _Recursion,
    x1: torch.Tensor,
    x2: torch.Tensor,
    q1: torch.Tensor,
    q2: torch.Tensor,
    entries: int,
) -> Pair:
    """Fill (N1, N2) outputs with tiles of at most ``entries`` entries."""
    rows = min(x1.shape[0], max(1, math.isqrt(entries)))
    cols = min(x2.shape[0], max(1, entries // rows))
    nngp = x1.new_empty(x1.shape[0], x2.shape[0])
    ntk = torch.empty_like(nngp)
    for r in range(0, x1.shape[0], rows):
        for c in range(0, x2.shape[0], cols):
            rs, cs = slice(r, r + rows), slice(c, c + cols)
            nngp[rs, cs], ntk[rs, cs] = rec.tile(x1[rs], x2[cs], q1[:, rs], q2[:, cs])
    return nngp, ntk


def _symmetric(rec: _Recursion, x: torch.Tensor, q: torch.Tensor, entries: int) -> Pair:
    """Fill symmetric (N, N) outputs from the tiles on and above the diagonal."""
    n = x.shape[0]
    side = min(n, max(1, math.isqrt(entries)))
    nngp = x.new_empty(n, n)
    ntk = torch.empty_like(nngp)
    for r in range(0, n, side):
        for c in range(r, n, side):
            rs, cs = slice(r, r + side), slice(c, c + side)
            tiles = rec.tile(x[rs], x[cs], q[:, rs], q[:, cs])
            for out, tile in zip((nngp, ntk), tiles, strict=True):
                if r == c:  # a diagonal tile: mirror its upper triangle (triu is slow on CPU)
                    i = torch.arange(tile.shape[0], device=tile.device)
                    tile = torch.where(i[:, None] <= i, tile, tile.T)
                out[rs, cs] = tile
                out[cs, rs] = tile.T
    return nngp, ntk


def _inputs(x: object, argument: str) -> torch.Tensor:
    """A finite (N, n_0) float tensor with N, n_0 ≥ 1, as float64."""
    x = finite_batch(x, argument)
    if x.dim() != 2:
        raise ValueError(f"{argument}: expected shape (N, features), got {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{argument}: has no features (shape {tuple(x.shape)})")
    return x.detach().to(torch.float64)
