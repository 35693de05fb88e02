"""The layers of the infinite-width CNN recursion (`ntkscope.kernels.infinite_cnn`), each a
function of the kernels of a batch of image pairs over pairs of positions (`Kernel`).

After φ both kernels are kept as K and K + T (K = E[φ(u) φ(v)], T = Θ · E[φ'(u) φ'(v)]),
scaled by the constant factors of the linear maps that follow (`activated`): every linear
map (convolution, pooling, readout) is then the same on both, with no multiplications.
The piecewise-linear φ (ReLU, leaky ReLU, abs) run in place (`Dual.block`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from ntkscope.kernels.dual import Dual, Pair, Spread, spread
from ntkscope.models.builders import Readout


@dataclass(frozen=True)
class Kernel:
    """NNGP and NTK of one layer's outputs for a batch of image pairs.

    ``nngp``, ``ntk``: (A, H, W, B, H, W) over pairs of positions (p of x, p' of x') for the
    pairs of A images x and B images x' (B = 1 for the pairs (x, x)), or (..., H, W) when
    ``same_position``: the entries p = p' only.
    """

    nngp: torch.Tensor
    ntk: torch.Tensor
    same_position: bool

    def variances(self) -> torch.Tensor:
        """Σ[p, p] of a kernel of images paired with themselves: (A, H, W), a copy."""
        if self.same_position:
            return self.nngp.clone()  # the activation overwrites Σ
        a, h, w = self.nngp.shape[:3]
        pairs = self.nngp.reshape(a, h * w, h * w)
        return pairs.diagonal(dim1=1, dim2=2).reshape(a, h, w).clone()

    def spread(self, v1: Side, v2: Side, own: bool) -> tuple[Side, Side]:
        """The terms (A, H, W) of x and (B, H, W) of x' broadcast against the entries: all
        pairs, or with ``own`` the pairs (x, x) (v1 = v2)."""
        if self.same_position:
            return (v1, v2) if own else (v1.map(lambda t: t[:, None]), v2.map(lambda t: t[None]))
        rows = v1.map(lambda t: t[:, :, :, None, None, None])
        return rows, v2.map(lambda t: t[:, None, None, None] if own else t[None, None, None])


def box(
    t: torch.Tensor, axes: Sequence[int], k: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_d t[.., i + d, .., i' + d, ..] over |d| ≤ k // 2: ``axes`` move together; 0 outside.
    Into ``out`` when given (not t), else a new array."""
    out, n = t.clone() if out is None else out.copy_(t), t.shape[axes[0]]
    for d in range(1, min(k // 2, n - 1) + 1):
        low, high = [slice(None)] * t.dim(), [slice(None)] * t.dim()
        for axis in axes:
            low[axis], high[axis] = slice(0, n - d), slice(d, n)
        out[tuple(low)] += t[tuple(high)]
        out[tuple(high)] += t[tuple(low)]
    return out


def conv(kernel: Kernel, k: int, bias_var: float) -> Kernel:
    """k×k convolution, "same" zero padding: the sum over offsets δ of the position pairs,
    plus σ_b², on both kernels, in their memory and one array more (its σ_w²/k² is in the
    activation before, `activated`)."""
    axes = ((-2,), (-1,)) if kernel.same_position else ((1, 4), (2, 5))

    def conv(t: torch.Tensor) -> torch.Tensor:
        t = box(box(t, axes[0], k), axes[1], k, out=t)
        return t.add_(bias_var) if bias_var else t

    return replace(kernel, nngp=conv(kernel.nngp), ntk=conv(kernel.ntk))


class Side(NamedTuple):
    """The per-input terms of one side (x or x') of an activation, computed once per input:
    the variances q = Σ(x, x)[p, p], 1/√q (0 where q = 0) and √(s/2π) √q (`Dual.block`'s),
    s the activation's scale (`activated`)."""

    q: torch.Tensor
    inv_sqrt: torch.Tensor
    root: torch.Tensor

    @property
    def spread(self) -> Spread:
        return Spread(self.q, self.inv_sqrt)

    def map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> Side:
        """The terms with ``f`` applied to each (a broadcast shape)."""
        return Side(*(f(t) for t in self))

    def part(self, index: slice | tuple[slice, ...]) -> Side:
        """The terms ``t[index]``."""
        return Side(*(t[index] for t in self))


def side(q: torch.Tensor, scale: float) -> Side:
    """The `Side` of variances q."""
    return Side(*spread(q), q.sqrt().mul_(math.sqrt(scale / (2 * math.pi))))


def activated(
    dual: Dual,
    sigma: torch.Tensor,
    ntk: torch.Tensor | None,
    a: Side,
    b: Side,
    scale: float,
    spare: torch.Tensor | None = None,
) -> Pair:
    """(s K, s (K + T)) from the NNGP Σ and NTK Θ of a layer's inputs, K = E[φ(u) φ(v)] and
    T = Θ · E[φ'(u) φ'(v)] (the module docstring's activation), s = ``scale``.

    Both kernels after φ are kept as K and K + T: every linear map after φ (convolution,
    pooling, readout) is then the same on both, Θ_next = σ_w²/k² Σ_δ (K + T) + σ_b², and the
    scale s carries the next layers' constant factors (σ_w²/k² or σ_w², 1/16 for a pooling).
    ``sigma`` and ``ntk`` (of the entries' shape) are overwritten. With `Dual.block` the
    results are in ``sigma`` and ``ntk``, ``spare`` (a new array when None) the scratch, or,
    for ``ntk`` None (Θ = Σ, block 0), in ``spare`` and ``sigma``. Else `Dual.given` makes
    its arrays (`Dual.arrays`)."""
    if dual.block is not None:
        theta = torch.empty_like(sigma) if spare is None else spare
        rows, cols = (a.inv_sqrt, a.root), (b.inv_sqrt, b.root)
        return dual.block(sigma, ntk, rows, cols, scale, theta)
    e_ff, e_dd = dual.given(a.spread, b.spread, sigma, overwrite=True)
    e_dd = e_dd.mul_(ntk).add_(e_ff)
    return (e_ff, e_dd) if scale == 1 else (e_ff.mul_(scale), e_dd.mul_(scale))


def activate(kernel: Kernel, dual: Dual, a: Side, b: Side, s: float) -> Kernel:
    """`activated` on a kernel, with the terms of x and x' spread over positions."""
    nngp, ntk = activated(dual, kernel.nngp, kernel.ntk, a, b, s)
    return replace(kernel, nngp=nngp, ntk=ntk)


def window_sums(t: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Sums of the 2×2 × 2×2 windows over ``axes`` (the rows and columns of p and of p',
    each of even length), as sums of adjacent pairs along one axis after the other: slices
    added in place of a reduction over strided axes, which ran ~9× slower (measured). The
    window's 1/16 is in the activation before (`activated`)."""
    for axis in sorted(axes, key=lambda a: a % t.dim()):
        pairs = t.unflatten(axis, (t.shape[axis] // 2, 2))
        half = axis % t.dim() + 1
        t = pairs.select(half, 0) + pairs.select(half, 1)
    return t


def window_sums_into(t: torch.Tensor, out: torch.Tensor, g: int) -> None:
    """The window sums of a chunk of block 0 (`infinite_cnn._Recursion.first_block`), NNGP
    and NTK stacked, written into ``out`` (2, B, R, C): t is (2, B, g·R, g·C), its rows and columns
    ordered by their position's offset in its window first (g = 4, or 1 without pooling), so
    that both sums run over whole blocks of t (two torch calls: 12 µs for a 9,216-entry
    chunk, 4.8× faster than adding its 16 blocks one by one; `window_sums`' strided adds
    took ~40 µs per kernel, measured)."""
    rows = t.reshape(2 * t.shape[1], g, -1).sum(1)
    torch.sum(rows.view(*out.shape[:3], g, out.shape[3]), dim=3, out=out)


def pool(kernel: Kernel) -> Kernel:
    """2×2 average pooling: the sum over each 2×2 × 2×2 block of position pairs."""
    axes = (1, 2, 4, 5)
    return replace(kernel, nngp=window_sums(kernel.nngp, axes), ntk=window_sums(kernel.ntk, axes))


def readout(kernel: Kernel, readout: Readout, bias_var: float) -> Pair:
    """Dense layer after global average pooling or flattening: (...,) NNGP and NTK (its σ_w²
    is in the last activation, `activated`)."""

    def mean(t: torch.Tensor) -> torch.Tensor:
        if kernel.same_position:
            t = t.mean((-2, -1))
        elif readout is Readout.GAP:
            t = t.mean((1, 2, 4, 5))
        else:
            a, h, w, b = t.shape[:4]
            t = t.reshape(a, h * w, b, h * w).diagonal(dim1=1, dim2=3).mean(-1)
        return t.add_(bias_var) if bias_var else t

    return mean(kernel.nngp), mean(kernel.ntk)


Variances = Callable[[int, Kernel], tuple[Side, Side]]
"""``variances(block, kernel)``: the terms of x and x' that block's activation uses, spread
over the positions."""
