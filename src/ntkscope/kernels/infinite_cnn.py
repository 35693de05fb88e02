"""Infinite-width NNGP and NTK kernels of the CNNs of `ntkscope.models.cnn` (NTK parameterization).

Novak et al. 2019, "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes"; Arora et al. 2019, "On Exact Computation with an Infinitely Wide Neural Net"
(CNTK). The same kernels as neural-tangents' ``stax.Conv(padding="SAME")``, ``AvgPool``,
``GlobalAvgPool``, ``Flatten`` and ``Dense`` with W_std = σ_w, b_std = σ_b.

For a pair of images (x, x') the kernels are (H, W, H, W) arrays over pairs of positions
(p of x, p' of x'). Each layer maps the covariance Σ (NNGP) and the NTK Θ of its input to
those of its output; with k×k filters, offsets δ ∈ {−⌊k/2⌋..⌊k/2⌋}², entries outside the
image counted as zero ("same" padding), C input channels, and φ(u), φ'(u) as in
docs/conventions.md:

    input       Σ⁰[p, p'] = Σ_c x_c[p] x'_c[p'] / C,          Θ⁰ = 0
    conv        Σ[p, p'] = σ_w²/k² Σ_δ K[p+δ, p'+δ] + σ_b²,
                Θ[p, p'] = Σ[p, p'] + σ_w²/k² Σ_δ T[p+δ, p'+δ]
                (K, T: the NNGP and NTK of the layer's input; Σ⁰, Θ⁰ for the first)
    activation  K[p, p'] = E[φ(u) φ(v)],  T[p, p'] = Θ[p, p'] · E[φ'(u) φ'(v)]
                (u, v) ~ N(0, [[Σ(x, x)[p, p], Σ[p, p']], [Σ[p, p'], Σ(x', x')[p', p']]])
    2×2 pool    both averaged over the 2×2 × 2×2 block of position pairs
    readout     gap:     Σ_out = σ_w² mean_{p, p'} K + σ_b²,  Θ_out = Σ_out + σ_w² mean_{p, p'} T
                flatten: the same means over p = p' only

The activation needs the variances Σ(x, x)[p, p] of every input at every layer. After a
pooling they depend on Σ(x, x)[p, p'] for p ≠ p' (the cross terms within a window), so each
input's whole self-covariance is computed first, batched; the N1×N2 matrix is then filled
in tiles of input pairs, every tile with the variances computed once per input.

Block 0 has the most position pairs, (HW)² per pair of images, and convolves the inputs
themselves, so its covariance is one matrix product of patches (`_patches`):
Σ¹(x, x')[p, p'] = P(x)_p · P(x')_p', P(x)_p the k×k patch at p scaled by √(σ_w²/(k² C)),
with √σ_b² appended. It is computed in chunks of rows of positions of x against several
images x' (about 64k entries on CPU, in cache), each chunk activated and, when block 0
pools, pooled before the next: only the pooled kernels, (HW/4)² per pair, are kept.

Cost: O(N1 N2 (HW)² (C k² + depth)) time (the later blocks' k² offsets separate into rows
and columns). Memory per pair of a tile: block 0's outputs, or the later blocks' position
pairs times the dual's working arrays and the block's own (`Dual.arrays` + `_BLOCK_ARRAYS`:
13 float64 values for ReLU, 10–24 for the other closed forms, 28 for the series), whichever
is larger (`_Recursion.entry_bytes`), plus one smallest chunk of block 0 per tile
(`_Recursion.tile_bytes`): 0.027 MB per pair and 0.11 MB per tile for 8×8 images pooled
after blocks 0 and 1, 6.8 MB and 6.8 MB for 32×32 (ReLU); without pooling after block 0,
the (HW)² pairs of block 1: 64 MB per pair for 28×28. With no pooling and the flatten
readout only the diagonal p = p' is ever needed (a convolution moves p and p' by the same
δ): that case costs O(HW) per pair and runs on any image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from ntkscope._checks import choice, finite_batch, nonnegative_real, positive_int
from ntkscope.kernels._infinite_tiles import (
    Recursion,
    check_second_inputs,
    entry_bytes,
    pairwise_kernels,
    tile_entries,
    written,
)
from ntkscope.kernels._tiling import resolve_budget
from ntkscope.kernels.dual import ActivationLike, Dual, Pair, for_activation
from ntkscope.models.builders import Readout, pooled_size, resolve_pools

_BLOCK_ARRAYS = 4
"""float64 values per position pair that a block holds beyond its dual's `Dual.arrays`
(which count an MLP layer's): a 48×48 tile of 8×8 images peaked at 1.6 (ReLU), 1.4 (erf),
0.1 (GELU) and 3.2 (step) more (measured, tests/kernels/test_memory_budget.py)."""


@dataclass(frozen=True)
class _Kernel:
    """NNGP and NTK of one layer's outputs for a batch of image pairs.

    ``nngp``, ``ntk``: (..., H, W, H, W) over pairs of positions (p of x, p' of x'), or
    (..., H, W) when ``same_position``: the entries p = p' only.
    """

    nngp: torch.Tensor
    ntk: torch.Tensor
    same_position: bool

    def variances(self) -> torch.Tensor:
        """Σ[p, p] of a kernel of images paired with themselves: (..., H, W)."""
        if self.same_position:
            return self.nngp
        h, w = self.nngp.shape[-2:]
        pairs = self.nngp.flatten(-4, -3).flatten(-2, -1)
        return pairs.diagonal(dim1=-2, dim2=-1).unflatten(-1, (h, w))

    def spread(self, v1: torch.Tensor, v2: torch.Tensor) -> Pair:
        """Variances (..., H, W) of x and x' broadcast against the position axes."""
        if self.same_position:
            return v1, v2
        return v1[..., None, None], v2[..., None, None, :, :]


def _box(t: torch.Tensor, axes: Sequence[int], k: int) -> torch.Tensor:
    """Σ_d t[.., i + d, .., i' + d, ..] over |d| ≤ k // 2: ``axes`` move together; 0 outside."""
    out, n = t.clone(), t.shape[axes[0]]
    for d in range(1, min(k // 2, n - 1) + 1):
        low, high = [slice(None)] * t.dim(), [slice(None)] * t.dim()
        for axis in axes:
            low[axis], high[axis] = slice(0, n - d), slice(d, n)
        out[tuple(low)] += t[tuple(high)]
        out[tuple(high)] += t[tuple(low)]
    return out


def _conv(kernel: _Kernel, k: int, weight_var: float, bias_var: float) -> _Kernel:
    """k×k convolution, "same" zero padding: the sum over offsets δ of the position pairs."""
    axes = ((-2,), (-1,)) if kernel.same_position else ((-4, -2), (-3, -1))
    scale = weight_var / k**2

    def conv(t: torch.Tensor) -> torch.Tensor:
        return _box(_box(t, axes[0], k), axes[1], k).mul_(scale)

    nngp = conv(kernel.nngp).add_(bias_var)
    return replace(kernel, nngp=nngp, ntk=conv(kernel.ntk).add_(nngp))


def _activate(kernel: _Kernel, dual: Dual, v1: torch.Tensor, v2: torch.Tensor) -> _Kernel:
    """E[φ(u) φ(v)] and Θ · E[φ'(u) φ'(v)], with variances v1, v2 spread over positions."""
    e_ff, e_dd = dual(v1, v2, kernel.nngp)
    return replace(kernel, nngp=e_ff, ntk=e_dd.mul_(kernel.ntk))


def _window_means(t: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Means of the 2×2 × 2×2 windows over ``axes`` (the rows and columns of p and of p',
    each of even length), as sums of adjacent pairs along one axis after the other: slices
    added in place of a reduction over strided axes, which ran ~9× slower (measured)."""
    for axis in sorted(axes, key=lambda a: a % t.dim()):
        pairs = t.unflatten(axis, (t.shape[axis] // 2, 2))
        half = axis % t.dim() + 1
        t = pairs.select(half, 0) + pairs.select(half, 1)
    return t.mul_(0.5 ** len(axes))


def _pool(kernel: _Kernel) -> _Kernel:
    """2×2 average pooling: the mean over each 2×2 × 2×2 block of position pairs."""
    axes = (-4, -3, -2, -1)
    return replace(
        kernel, nngp=_window_means(kernel.nngp, axes), ntk=_window_means(kernel.ntk, axes)
    )


def _readout(kernel: _Kernel, readout: Readout, weight_var: float, bias_var: float) -> Pair:
    """Dense layer after global average pooling or flattening: (...,) NNGP and NTK."""

    def mean(t: torch.Tensor) -> torch.Tensor:
        if kernel.same_position:
            return t.mean((-2, -1))
        if readout is Readout.GAP:
            return t.mean((-4, -3, -2, -1))
        return t.flatten(-4, -3).flatten(-2, -1).diagonal(dim1=-2, dim2=-1).mean(-1)

    nngp = mean(kernel.nngp).mul_(weight_var).add_(bias_var)
    return nngp, mean(kernel.ntk).mul_(weight_var).add_(nngp)


Variances = Callable[[int, _Kernel], Pair]
"""``variances(block, kernel)``: the spread (v1, v2) that block's activation uses."""


def _patches(x: torch.Tensor, k: int, weight_var: float, bias_var: float) -> torch.Tensor:
    """(N, H·W, C·k² + 1): the k×k patch of each position (0 outside the image) scaled by
    √(σ_w² / (k² C)), and √σ_b², so that the first convolution's covariance is a dot product:
    Σ¹(x, x')[p, p'] = σ_w²/(k² C) Σ_δ Σ_c x_c[p+δ] x'_c[p'+δ] + σ_b² = P(x)_p · P(x')_p'."""
    n, c, h, w = x.shape
    patches = F.unfold(x, k, padding=k // 2).transpose(1, 2)
    bias = patches.new_full((n, h * w, 1), math.sqrt(bias_var))
    return torch.cat([patches * math.sqrt(weight_var / (k * k * c)), bias], dim=2)


def _row_blocks(n: int, h: int, rows: int) -> list[tuple[slice, slice]]:
    """(images, image rows) of the chunks of ``rows`` rows of n images of height h: whole
    images when rows ≥ h, else blocks of one image (of an even number of rows where block 0
    pools: h is even then, so no block splits a pooling window)."""
    if rows >= h:
        per = rows // h
        return [(slice(a, a + per), slice(0, h)) for a in range(0, n, per)]
    blocks = range(0, h, rows)
    return [(slice(a, a + 1), slice(r, min(r + rows, h))) for a in range(n) for r in blocks]


@dataclass(frozen=True)
class _Recursion:
    """The layer recursion of the module docstring for one CNN configuration."""

    dual: Dual
    depth: int
    weight_var: float  # σ_w²
    bias_var: float  # σ_b²
    kernel_size: int
    pools: frozenset[int]
    readout: Readout
    image_size: tuple[int, int]  # (H, W) of the inputs

    @property
    def same_position(self) -> bool:
        """Only p = p' entries are needed: flatten readout and no pooling."""
        return self.readout is Readout.FLATTEN and not self.pools

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled patches of images x (`_patches`), whose dot products are Σ¹."""
        return _patches(x, self.kernel_size, self.weight_var, self.bias_var)

    def network(self, kernel: _Kernel, variances: Variances) -> Pair:
        """The readout's (NNGP, NTK) from the kernel after block 0, block by block."""
        for block in range(1, self.depth):
            kernel = _conv(kernel, self.kernel_size, self.weight_var, self.bias_var)
            kernel = _activate(kernel, self.dual, *variances(block, kernel))
            if block in self.pools:
                kernel = _pool(kernel)
        return _readout(kernel, self.readout, self.weight_var, self.bias_var)

    def first_block(
        self, p1: torch.Tensor, p2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, chunk: int
    ) -> _Kernel:
        """Block 0 (convolution, φ, pooling) for all pairs of images p1 × p2: (n1, n2, ...).

        p1, p2: scaled patches (n, H·W, K) (`patches`); v1, v2: their variances Σ¹(x, x)[p, p],
        (n, H, W). With all position pairs, computed in chunks of at most ``chunk`` entries
        (`_chunk_shape`), each pooled before the next is made: Θ¹ = Σ¹ (Θ⁰ = 0)."""
        if self.same_position:
            return self._activated(torch.einsum("aqk,bqk->abq", p1, p2), v1[:, None], v2[None])
        (h, w), pooled = self.image_size, 0 in self.pools
        oh, ow = (h // 2, w // 2) if pooled else (h, w)
        n1, n2, k = len(p1), len(p2), p1.shape[-1]
        out = [p1.new_empty(n1, n2, oh, ow, oh, ow) for _ in range(2)]
        rows, nb = self._chunk_shape(chunk, n2)
        p1, v1 = p1.view(n1, h, w, k), v1.view(n1, h, w)
        columns, q2 = p2.reshape(n2 * h * w, k), v2.reshape(1, n2 * h * w)
        for images, part in _row_blocks(n1, h, rows):
            a = p1[images, part].reshape(-1, k)
            qa = v1[images, part].reshape(-1, 1)
            r = part.stop - part.start
            for b in range(0, n2, nb):
                cs = slice(b * h * w, min(b + nb, n2) * h * w)
                sigma = a @ columns[cs].T
                e_ff, e_dd = self.dual(qa, q2[:, cs], sigma)
                m = (cs.stop - cs.start) // (h * w)
                for t, o in zip((e_ff, e_dd.mul_(sigma)), out, strict=True):
                    t = t.view(-1, r, w, m, h, w)
                    t = _window_means(t, (1, 2, 4, 5)) if pooled else t
                    rs = slice(part.start // 2, part.stop // 2) if pooled else part
                    o[images, b : b + m, rs] = t.permute(0, 3, 1, 2, 4, 5)
        return _Kernel(*out, same_position=False)

    def _activated(self, sigma: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor) -> _Kernel:
        """Block 0 with ``same_position`` (no pooling): φ of Σ¹ (..., H·W); Θ¹ = Σ¹."""
        sigma = sigma.unflatten(-1, self.image_size)
        return _activate(_Kernel(sigma, sigma, True), self.dual, v1, v2)

    def _own_first_block(self, p: torch.Tensor, v: torch.Tensor) -> _Kernel:
        """Block 0 for the pairs (x, x) of images with patches p and variances v: (n, ...)."""
        if self.same_position:
            return self._activated(torch.einsum("aqk,aqk->aq", p, p), v, v)
        chunk, own = self.chunk_entries(1), []
        for j in range(len(p)):
            pj, vj = p[j : j + 1], v[j : j + 1]
            own.append(self.first_block(pj, pj, vj, vj, chunk))
        nngp, ntk = (torch.cat([getattr(k, name)[0] for k in own]) for name in ("nngp", "ntk"))
        return _Kernel(nngp, ntk, same_position=False)

    def _chunk_shape(self, chunk: int, n2: int) -> tuple[int, int]:
        """(image rows of x, images x') of a chunk of ≤ ``chunk`` entries (at least the
        smallest: 2 rows, or 1 without pooling, of one image against one image x')."""
        step, unit = 2 if 0 in self.pools else 1, self._smallest_chunk()
        if unit * n2 > chunk:
            return step, max(1, chunk // unit)
        return step * max(1, chunk // (unit * n2)), n2

    def single(self, x: torch.Tensor, budget: int) -> tuple[list[torch.Tensor], Pair]:
        """Per-block variances Σ(x, x)[p, p], (N, H_l, W_l), and the kernels of (x, x)."""
        p = self.patches(x)
        v0 = p.square().sum(-1).unflatten(-1, self.image_size)
        batch = tile_entries(budget, x.device, self.entry_bytes(), self.tile_bytes())
        variances: list[list[torch.Tensor]] = [[v0]] + [[] for _ in range(1, self.depth)]

        def own(block: int, kernel: _Kernel) -> Pair:
            v = kernel.variances()
            variances[block].append(v)
            return kernel.spread(v, v)

        outputs = [
            self.network(self._own_first_block(p[i : i + batch], v0[i : i + batch]), own)
            for i in range(0, len(x), batch)
        ]
        nngp, ntk = (torch.cat(parts) for parts in zip(*outputs, strict=True))
        return [torch.cat(v) for v in variances], (nngp, ntk)

    def tile(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        v1: list[torch.Tensor],
        v2: list[torch.Tensor],
        out: Pair | None = None,
    ) -> Pair:
        """(NNGP, NTK) of shape (N1, N2) for rows x1, columns x2 with variances v1, v2,
        copied into ``out`` when given (`_infinite_tiles.Recursion.tile`)."""

        def given(block: int, kernel: _Kernel) -> Pair:
            return kernel.spread(v1[block][:, None], v2[block][None])

        chunk = self.chunk_entries(len(x1) * len(x2))
        first = self.first_block(self.patches(x1), self.patches(x2), v1[0], v2[0], chunk)
        return written(self.network(first, given), out)

    def _pair_entries(self) -> list[int]:
        """Entries per pair of images at each block's activation and after the last block."""
        positions, entries = math.prod(self.image_size), []
        for block in range(self.depth):
            entries.append(positions if self.same_position else positions**2)
            positions //= 4 if block in self.pools else 1
        return [*entries, positions if self.same_position else positions**2]

    def _smallest_chunk(self) -> int:
        """Entries of the smallest chunk of block 0 (`_chunk_shape`)."""
        (h, w), step = self.image_size, 2 if 0 in self.pools else 1
        return step * w * h * w

    def chunk_entries(self, pairs: int) -> int:
        """Entries of block 0's chunks for a tile of ``pairs`` pairs: the tile's memory
        (``pairs · entry_bytes + tile_bytes``) less block 0's outputs, at least
        `_smallest_chunk`."""
        held = 16 * self._pair_entries()[1]
        room = pairs * (self.entry_bytes() - held) + self.tile_bytes()
        return max(room // self._per_position_pair(), self._smallest_chunk())

    def entry_bytes(self) -> int:
        """Working memory per pair of images: block 0's outputs (NNGP and NTK), or the later
        blocks' position pairs × `_per_position_pair`, whichever is larger (with
        ``same_position`` block 0 is not chunked and counts here)."""
        entries, per_entry = self._pair_entries(), self._per_position_pair()
        later = per_entry * max(entries[1:-1], default=0)
        if self.same_position:
            return max(per_entry * entries[0], later)
        return max(16 * entries[1], later)

    def tile_bytes(self) -> int:
        """Working memory of a tile besides ``entry_bytes`` per pair: one smallest chunk of
        block 0 (`_smallest_chunk`) × `_per_position_pair`, which every tile holds once,
        however few its pairs (charged per pair, it shrank small budgets' tiles to a few
        pairs)."""
        if self.same_position:
            return 0
        return self._per_position_pair() * self._smallest_chunk()

    def _per_position_pair(self) -> int:
        """Working memory per position pair of a block: the dual's arrays (measured for
        an MLP layer, `Dual.arrays`) and `_BLOCK_ARRAYS`."""
        return entry_bytes(self.dual) + 8 * _BLOCK_ARRAYS


def infinite_cnn_kernels(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    depth: int,
    activation: ActivationLike = "relu",
    sigma_w: float = 2**0.5,
    sigma_b: float = 0.0,
    kernel_size: int = 3,
    pool_after: Sequence[int] | None = None,
    readout: str | Readout = Readout.GAP,
    diagonal: bool = False,
    memory_budget: int | str | None = None,
) -> Pair:
    """NNGP and NTK of the infinitely wide `ntkscope.models.cnn` with the same arguments.

    The network: ``depth`` blocks of [k×k convolution with "same" zero padding, φ], a 2×2
    average pooling after each block in ``pool_after``, then the readout (a dense layer
    after global average pooling, or after flattening). Recursion, sources and cost: see
    the module docstring. The duals are those of `ntkscope.kernels.dual.for_activation`
    (closed forms, or a series with error ≤ 1e-9 per expectation).

    Cost per pair of images: (HW)² position pairs (HW with ``readout="flatten"`` and no
    pooling). Measured on one shared CPU core (``benchmarks/infinite_cnn.py``; ReLU, depth
    3, GAP), before block 0 became one chunked GEMM: 8×8 images pooled twice 0.7–1.8 ms
    per pair (1.2× the eNTK of a width-512 CNN), 14×14 pooled once 4.6 ms (0.5×), 14×14
    flatten without pooling 0.024 ms; 28×28 ~0.3 s per pair and 79 MB of working memory
    per pair, i.e. ~40 h for the 5·10⁵ pairs of 1,000 images: downsample 28×28 images
    (MNIST to 14×14 or 7×7). Since: 32×32 images pooled after blocks 0 and 1, 8 × 8 pairs
    with x2 given, 2.1 s of CPU time on one thread (7.2 s before), 26 ms per pair counting
    the 16 images' own pairs.

    Args:
        x1: images (N1, C, H, W), any float dtype; computed in float64 on x1's device. H and
            W must be divisible by 2^(number of poolings).
        x2: images (N2, C, H, W) on the same device, or None for x2 = x1 (then the result
            is exactly symmetric and only its upper triangle of tiles is computed).
        depth: number of convolution blocks ≥ 1.
        activation: a name of `ntkscope.models.ActivationName`, a torch activation module
            or function, any elementwise callable, or a `Dual` (see ``for_activation``).
        sigma_w: weight standard deviation σ_w ≥ 0 of every layer.
        sigma_b: bias standard deviation σ_b ≥ 0 of every layer.
        kernel_size: odd filter size k.
        pool_after: blocks (0-based) followed by a 2×2 average pooling; None: every block
            but the last, as in `ntkscope.models.cnn`.
        readout: "gap" (global average pooling) or "flatten" (see `ntkscope.models.Readout`).
        diagonal: return only the kernels of (x, x) for the images of x1: shape (N1,).
        memory_budget: bytes (or a string such as "2GB") of working memory for the tiles
            of image pairs (and the batches of single images), beyond the inputs and the
            outputs; at least one pair per tile. Default: a quarter of the free memory of
            x1's device. On CPU, tiles are also capped at 4 MiB, and the kind of budget sets
            glibc's heap thresholds (as in `ntkscope.empirical_ntk`). Not counted: the
            coefficients that the series duals keep per distinct variance (≤ 64 MB). Per
            pair of a tile: see the module docstring (0.027 MB per pair and 0.11 MB per
            tile for 8×8 images, ReLU; ~2× that for the series).

    Returns:
        (nngp, ntk): float64 tensors of shape (N1, N2), or (N1,) when ``diagonal``.

    Raises:
        TypeError, ValueError: naming the offending argument.
    """
    rec, x1, x2, budget = plan(**locals())  # every argument, by name
    return pairwise_kernels(rec, x1, x2, diagonal=diagonal, budget=budget)


def plan(
    x1, x2, *, depth, activation, sigma_w, sigma_b, kernel_size, pool_after, readout,
    diagonal, memory_budget,
) -> tuple[Recursion, torch.Tensor, torch.Tensor | None, int]:  # fmt: skip
    """(recursion, x1, x2, budget in bytes) from all the arguments of `infinite_cnn_kernels`,
    checked (the tiled kernel job binds them to its signature, defaults included)."""
    depth = positive_int(depth, "depth")
    k = positive_int(kernel_size, "kernel_size")
    if k % 2 != 1:
        raise ValueError(f"kernel_size: expected an odd size for 'same' padding, got {k}")
    pools = resolve_pools(pool_after, depth)
    x1 = _images(x1, "x1", len(pools))
    x2 = None if x2 is None else _images(x2, "x2", len(pools))
    check_second_inputs(x1, x2, diagonal)
    rec = _Recursion(
        dual=for_activation(activation),
        depth=depth,
        weight_var=nonnegative_real(sigma_w, "sigma_w") ** 2,
        bias_var=nonnegative_real(sigma_b, "sigma_b") ** 2,
        kernel_size=k,
        pools=pools,
        readout=choice(Readout, readout, "readout"),
        image_size=(x1.shape[2], x1.shape[3]),
    )
    return rec, x1, x2, resolve_budget(memory_budget, x1.device)


def _images(x: object, argument: str, pools: int) -> torch.Tensor:
    """A finite (N, C, H, W) float tensor, H and W divisible by 2^pools, as float64."""
    x = finite_batch(x, argument)
    if x.dim() != 4 or 0 in x.shape:
        raise ValueError(f"{argument}: expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    pooled_size(tuple(x.shape[2:]), pools, argument)
    return x.detach().to(torch.float64)
