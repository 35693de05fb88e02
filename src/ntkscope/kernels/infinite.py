"""Infinite-width NNGP and NTK kernels of a multilayer perceptron (NTK parameterization).

The recursion of docs/conventions.md (Neal 1996; Lee et al. 2018, "Deep Neural Networks as
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

from ntkscope._checks import finite_batch, nonnegative_int, nonnegative_real
from ntkscope.kernels._infinite_tiles import (
    OUTPUT_BYTES,
    Recursion,
    check_second_inputs,
    entry_bytes,
    pairwise_kernels,
    written,
)
from ntkscope.kernels._tiling import resolve_budget
from ntkscope.kernels.dual import (
    LAYER_ARRAYS,
    ActivationLike,
    Dual,
    Pair,
    Spread,
    for_activation,
    spread,
)


@dataclass(frozen=True)
class _Recursion:
    """The layer recursion of docs/conventions.md for one network configuration."""

    dual: Dual
    depth: int
    weight_var: float  # σ_w²
    bias_var: float  # σ_b²

    def single(self, x: torch.Tensor, budget: int) -> tuple[list[torch.Tensor], Pair]:
        """(per-input terms of the tiles, each (N,); (Σ^{L+1}(x, x), Θ^{L+1}(x, x))).

        The terms: for l = 1..L the `Spread` of Σ^l(x, x), q then 1/√q, and √(σ_w²/2π) √q
        (`Dual.layer`'s). O(N · depth) memory: ``budget`` is not needed."""
        nngp = self.weight_var * x.square().mean(1) + self.bias_var
        ntk, terms = nngp.clone(), []
        for _ in range(self.depth):
            terms.extend(
                (*spread(nngp), nngp.sqrt().mul_((self.weight_var / (2 * math.pi)) ** 0.5))
            )
            e_ff, e_dd = self.dual.diagonal(nngp)
            nngp = self.weight_var * e_ff + self.bias_var
            ntk = nngp + ntk * (self.weight_var * e_dd)
        return terms, (nngp.clone(), ntk)

    def tile(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        t1: list[torch.Tensor],
        t2: list[torch.Tensor],
        out: Pair | None = None,
    ) -> Pair:
        """(Σ^{L+1}, Θ^{L+1}) for rows x1 and columns x2 with per-input terms t1, t2 (`single`),
        in ``out`` when given (`_infinite_tiles.Recursion.tile`).

        Under `Dual.layer` the layers run in ``out`` and two arrays more: Θ^l in Θ's output,
        Σ^l alternating between Σ's output and a spare array, θ in the other. Otherwise
        each layer's dual takes ρ in Σ^l's memory and its outputs become Σ^{l+1}, Θ^{l+1}.
        """
        if self.dual.layer is None or not self.depth:
            return written(self._tile(x1, x2, t1, t2), out)
        if out is None:
            out = x1.new_empty(len(x1), len(x2)), x1.new_empty(len(x1), len(x2))
        spare, theta = x1.new_empty(len(x1), len(x2)), x1.new_empty(len(x1), len(x2))
        nngp, other = (out[0], spare) if self.depth % 2 == 0 else (spare, out[0])
        self._input_kernel(x1, x2, nngp, theta)
        ntk = out[1].copy_(nngp)  # Θ¹ = Σ¹
        for layer in range(0, 3 * self.depth, 3):
            rows = t1[layer + 1][:, None], t1[layer + 2][:, None]
            cols = t2[layer + 1][None], t2[layer + 2][None]
            self.dual.layer(nngp, ntk, rows, cols, self.weight_var, self.bias_var, other, theta)
            nngp, other = other, nngp
        return out

    def _input_kernel(
        self, x1: torch.Tensor, x2: torch.Tensor, out: torch.Tensor, products: torch.Tensor
    ) -> None:
        """Σ¹ = σ_w² x1 x2ᵀ / n_0 + σ_b², into ``out``; x1 x2ᵀ in ``products`` (contiguous, of
        the tile's shape; ``out`` itself where it is)."""
        torch.mm(x1, x2.T, out=products)
        torch.mul(products, self.weight_var / x1.shape[1], out=out)
        if self.bias_var:
            out.add_(self.bias_var)

    def _tile(
        self, x1: torch.Tensor, x2: torch.Tensor, t1: list[torch.Tensor], t2: list[torch.Tensor]
    ) -> Pair:
        """`tile` by `Dual.given`: each layer's dual takes ρ in the memory of Σ^l."""
        nngp = x1.new_empty(len(x1), len(x2))
        self._input_kernel(x1, x2, nngp, nngp)
        ntk = nngp.clone()  # Θ¹ = Σ¹, whose memory the first dual overwrites
        for layer in range(0, 3 * self.depth, 3):
            rows = Spread(t1[layer][:, None], t1[layer + 1][:, None])
            cols = Spread(t2[layer][None], t2[layer + 1][None])
            e_ff, e_dd = self.dual.given(rows, cols, nngp, overwrite=True)
            nngp = e_ff.mul_(self.weight_var)
            if self.bias_var:
                nngp.add_(self.bias_var)
            ntk = torch.addcmul(nngp, ntk, e_dd, value=self.weight_var, out=e_dd)
            del e_ff, e_dd  # the next dual runs with nngp and ntk only
        return nngp, ntk

    def entry_bytes(self) -> int:
        """Working memory per matrix entry of a tile written into ``out``: under `Dual.layer`
        its two arrays (`LAYER_ARRAYS` less Σ's and Θ's outputs), else `Dual.arrays` less
        Σ^l, whose memory takes ρ (depth 0: a closed form, the identity)."""
        if self.depth and self.dual.layer is not None:
            return 8 * LAYER_ARRAYS - OUTPUT_BYTES
        return entry_bytes(for_activation("identity") if self.depth == 0 else self.dual) - 8

    def tile_bytes(self) -> int:
        """Working memory of a tile besides ``entry_bytes`` per entry: none."""
        return 0


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
) -> Pair:
    """NNGP kernel Σ^{L+1} and NTK Θ^{L+1} of an infinitely wide MLP with L = ``depth``.

    Recursion and parameterization: see the module docstring (docs/conventions.md). Depth 0 is
    the linear model f(x) = σ_w/√n_0 · W x + σ_b b, whose NNGP and NTK are both Σ¹. The duals
    are those of `ntkscope.kernels.dual.for_activation`: closed forms where they exist,
    otherwise a series with error ≤ 1e-9 per expectation (accuracy and cost stated there).

    Args:
        x1: inputs (N1, n_0), any float dtype; computed in float64 on x1's device.
        x2: inputs (N2, n_0) on the same device, or None for x2 = x1 (then the result is
            exactly symmetric and only its upper triangle of tiles is computed).
        depth: number of hidden layers L ≥ 0.
        activation: a name of `ntkscope.models.ActivationName`, a torch activation module
            or function, any elementwise callable, or a `Dual` (see ``for_activation``).
        sigma_w: weight standard deviation σ_w ≥ 0.
        sigma_b: bias standard deviation σ_b ≥ 0.
        diagonal: return only Σ^{L+1}(x, x) and Θ^{L+1}(x, x) for the rows of x1.
        memory_budget: bytes (or a string such as "2GB") of working memory for the tiles,
            beyond the inputs, the outputs and the O(N · depth) diagonal recursion; at
            least one entry is computed per tile. Default: a quarter of the free memory of
            x1's device (on CPU the kind of budget also sets glibc's heap thresholds, as in
            `ntkscope.empirical_ntk`). Not counted: the coefficients that the series duals
            keep per distinct variance (≤ 64 MB, `ntkscope.kernels._series_dual`). A tile
            needs 16 bytes per entry for ReLU, leaky ReLU and abs, whose layers run in
            place in the kernel's own memory (`Dual.layer`), ``8 · (Dual.arrays − 1)`` for
            the other closed forms (40–152, measured) and 184 for the series. On CPU,
            tiles are also capped at 4 MiB, which keeps them in cache (fastest, measured),
            and a budget under that cap is shared by two tiles computed at once when torch
            has two threads (`ntkscope.kernels._infinite_tiles.concurrent_tiles`), but for
            the in-place layers.

    Returns:
        (nngp, ntk): float64 tensors of shape (N1, N2), or (N1,) when ``diagonal``.

    Raises:
        TypeError, ValueError: naming the offending argument.
    """
    rec, x1, x2, budget = plan(**locals())  # every argument, by name
    concurrent = rec.dual.layer is None  # see `_infinite_tiles.concurrent_tiles`
    return pairwise_kernels(rec, x1, x2, diagonal=diagonal, budget=budget, concurrent=concurrent)


def plan(
    x1, x2, *, depth, activation, sigma_w, sigma_b, diagonal, memory_budget
) -> tuple[Recursion, torch.Tensor, torch.Tensor | None, int]:
    """(recursion, x1, x2, budget in bytes) from all the arguments of `infinite_kernels`,
    checked (the tiled kernel job binds them to its signature, defaults included)."""
    rec = _Recursion(
        dual=for_activation(activation),
        depth=nonnegative_int(depth, "depth"),
        weight_var=nonnegative_real(sigma_w, "sigma_w") ** 2,
        bias_var=nonnegative_real(sigma_b, "sigma_b") ** 2,
    )
    x1 = _inputs(x1, "x1")
    x2 = None if x2 is None else _inputs(x2, "x2")
    check_second_inputs(x1, x2, diagonal)
    return rec, x1, x2, resolve_budget(memory_budget, x1.device)


def _inputs(x: object, argument: str) -> torch.Tensor:
    """A finite (N, n_0) float tensor with N, n_0 ≥ 1, as float64."""
    x = finite_batch(x, argument)
    if x.dim() != 2:
        raise ValueError(f"{argument}: expected shape (N, features), got {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{argument}: has no features (shape {tuple(x.shape)})")
    return x.detach().to(torch.float64)
