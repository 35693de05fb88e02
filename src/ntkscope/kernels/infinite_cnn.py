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
themselves, so its covariance is one matrix product of patches (`_Recursion.patches`):
Σ¹(x, x')[p, p'] = P(x)_p · P(x')_p', P(x)_p the k×k patch at p scaled by √(σ_w²/(k² C)),
with √σ_b² appended. It is computed in chunks of positions of x against several images x'
(the tile's share of the budget less what it holds: `_Recursion.chunk_entries`), each
chunk activated (in place for ReLU, leaky ReLU and abs: `Dual.layer`) and, when block 0
pools, pooled into the tile's outputs before the next: only the pooled kernels, (HW/4)²
per pair, are kept. The patches are ordered by their position's offset in its 2×2 window,
so that a chunk's pooling sums whole blocks of it (two torch calls). The later blocks are
`_cnn_layers`' functions on the tile's (N1, H, W, N2, H, W) kernels.

Cost: O(N1 N2 (HW)² (C k² + depth)) time (the later blocks' k² offsets separate into rows
and columns). Memory per pair of a tile (`_Recursion.entry_bytes`): block 0's outputs, or
the later blocks' position pairs × `_Recursion._per_position_pair` (ReLU, leaky ReLU, abs:
`_IN_PLACE_ARRAYS` = 3.5 float64 values; the other closed forms:
`Dual.arrays` + `_BLOCK_ARRAYS`, 10–24; the series 28), whichever is larger; per tile
(`_Recursion.tile_bytes`) room for a chunk of block 0 of `_CHUNK_ENTRIES` entries (at most
half the budget), which also holds the tile's images' patches (8·HW·(C k² + 1) bytes per
image). ReLU, 8×8 images pooled after blocks 0 and 1: 7.2 kB per pair, 0.33 MB per tile
(at most half the budget), 14 kB per image; 32×32: 2.6 MB per pair. Without pooling after
block 0 the (HW)² pairs of block 1 count: 25 MB per pair for 28×28 (ReLU). With no pooling
and the flatten readout only the diagonal p = p' is ever needed (a convolution moves p and
p' by the same δ): that case costs O(HW) per pair and runs on any image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ntkscope._checks import choice, finite_batch, nonnegative_real, positive_int
from ntkscope.kernels._cnn_layers import (
    Kernel,
    Side,
    Variances,
    activate,
    activated,
    conv,
    pool,
    readout,
    side,
    window_sums_into,
)
from ntkscope.kernels._infinite_tiles import (
    Recursion,
    check_second_inputs,
    concurrent_tiles,
    entry_bytes,
    pairwise_kernels,
    tile_entries,
    tile_memory,
    written,
)
from ntkscope.kernels._tiling import resolve_budget
from ntkscope.kernels.dual import (
    ActivationLike,
    Dual,
    Pair,
    for_activation,
)
from ntkscope.models.builders import Readout, pooled_size, resolve_pools

_BLOCK_ARRAYS = 4
"""float64 values per position pair that a block holds beyond its dual's `Dual.arrays`
(which count an MLP layer's) when the dual runs out of place: a 48×48 tile of 8×8 images
peaked at 1.4 (erf), 0.1 (GELU) and 3.2 (step) more (measured before the layers kept K and
K + T, tests/kernels/test_memory_budget.py, which still pass)."""


_IN_PLACE_ARRAYS = 3.5
"""float64 values per position pair of a block under `Dual.block`: its NNGP and NTK and one
array more, θ in the activation (`_closed_duals.piecewise_linear_block`) or the
convolution's copy (`conv`), and a half for what the heap keeps of block 0 (its patches and
chunks, below the 1 MiB mmap threshold, stay resident beside the later blocks' mapped
arrays): a 48×48 tile of 8×8 images (tests/kernels/test_memory_budget.py) peaked at
3.07–3.31 beyond its chunks' room (ReLU, leaky ReLU, abs; 3.125 failed there). Block 0's
chunks hold two (`_Recursion._chunk_arrays`) and the quarter arrays of their window sums."""


_CHUNK_ENTRIES = 2**14
"""Entries of block 0's chunks that a tile makes room for (`_Recursion.tile_bytes`): a
chunk costs ~30 torch calls whatever its size (~27 µs of them). ReLU, 8×8 images, 1 MiB, one
thread, load ~3: 1.61× the default's CPU time with room for the smallest chunk (tiles of
10 × 10 pairs, chunks of ~7,700 entries), 1.30–1.39× with room for 2^13–2^14 entries (7 × 7
pairs, ~16,000 entries); 2^15 left room for one pair per tile (11×)."""


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
    channels: int  # C of the inputs
    budget: int  # the memory budget in bytes

    @property
    def same_position(self) -> bool:
        """Only p = p' entries are needed: flatten readout and no pooling."""
        return self.readout is Readout.FLATTEN and not self.pools

    @property
    def _window(self) -> int:
        """Positions per window of block 0's pooling (4), 1 when it does not pool."""
        return 4 if 0 in self.pools else 1

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(g, N, H'·W', C·k² + 1): the k×k patch of each position of images x (0 outside
        the image) scaled by √(σ_w² / (k² C)), and √σ_b², so that the first convolution's
        covariance is a dot product: Σ¹(x, x')[p, p'] = σ_w²/(k² C) Σ_δ Σ_c x_c[p+δ]
        x'_c[p'+δ] + σ_b² = P(x)_p · P(x')_p'. Grouped by the position's offset in its 2×2
        window of block 0's pooling, g = `_window` (as a chunk's rows and columns are
        ordered, `window_sums_into`). Two arrays of the patches' size at most."""
        (n, c, h, w), k, g = x.shape, self.kernel_size, self._window
        unfolded = F.unfold(x, k, padding=k // 2)  # (n, C·k², H·W)
        out = x.new_empty(g, n, h * w // g, c * k * k + 1)
        if g == 1:
            patches = unfolded.transpose(1, 2)[None]
        else:
            patches = unfolded.view(n, -1, h // 2, 2, w // 2, 2).permute(3, 5, 0, 2, 4, 1)
        scaled = out[..., :-1].view(patches.shape)
        torch.mul(patches, math.sqrt(self.weight_var / (k * k * c)), out=scaled)
        out[..., -1] = math.sqrt(self.bias_var)
        return out

    def _pooled_size(self) -> tuple[int, int]:
        """(H', W') of block 0's outputs."""
        (h, w), step = self.image_size, 2 if 0 in self.pools else 1
        return h // step, w // step

    def scale(self, block: int) -> float:
        """The constant factor of the linear maps after block's φ (`activated`): σ_w²/k² of
        the next convolution, or σ_w² of the readout, and 1/16 for a 2×2 pooling."""
        last = block == self.depth - 1
        weight = self.weight_var if last else self.weight_var / self.kernel_size**2
        return weight / 16 if block in self.pools else weight

    def network(self, kernel: Kernel, variances: Variances) -> Pair:
        """The readout's (NNGP, NTK) from the kernel after block 0, block by block."""
        for block in range(1, self.depth):
            kernel = conv(kernel, self.kernel_size, self.bias_var)
            kernel = activate(kernel, self.dual, *variances(block, kernel), self.scale(block))
            if block in self.pools:
                kernel = pool(kernel)
        return readout(kernel, self.readout, self.bias_var)

    def first_block(
        self, a1: torch.Tensor, a2: torch.Tensor, q1: Side, q2: Side, chunk: int
    ) -> Kernel:
        """Block 0 (convolution, φ, pooling) for all pairs of images x1 × x2: (n1, ...).

        a1, a2: scaled patches (g, n·P, K) (`patches`, P = H'·W' positions after block 0);
        q1, q2: their terms (`Side` of Σ¹(x, x)[p, p]), (g, n·P). With all position pairs,
        in chunks of at most ``chunk`` entries (`_chunk_shape`: P' positions of x against m
        images x'), each pooled into the outputs before the next is made: Θ¹ = Σ¹ (Θ⁰ = 0)."""
        (oh, ow), k, scale = self._pooled_size(), a1.shape[-1], self.scale(0)
        n1, n2 = a1.shape[1] // (oh * ow), a2.shape[1] // (oh * ow)
        if self.same_position:
            p1, p2 = (a.view(-1, oh * ow, k) for a in (a1[0], a2[0]))
            sigma = torch.einsum("aqk,bqk->abq", p1, p2).unflatten(-1, self.image_size)
            v1, v2 = (q.map(lambda t: t.reshape(-1, oh, ow)) for q in (q1, q2))
            kernel = Kernel(sigma, sigma.clone(), True)
            return activate(kernel, self.dual, *kernel.spread(v1, v2, own=False), scale)
        out = a1.new_empty(2, n1, oh, ow, n2, oh, ow)
        rows, images = self._chunk_shape(chunk, n2)
        entries = out.view(2, 1, n1 * oh * ow, n2 * oh * ow)
        size = min(rows, n1 * oh * ow) * min(images, n2) * self._smallest_chunk()
        room = a1.new_empty(self._chunk_arrays * size)
        for c in range(0, n2 * oh * ow, images * oh * ow):
            cs = slice(c, c + images * oh * ow)
            cols = a2[:, cs].reshape(1, -1, k)
            qc = q2.part((slice(None), cs)).map(lambda t: t.reshape(1, 1, -1))
            for r in range(0, n1 * oh * ow, rows):
                rs = slice(r, r + rows)
                qa = q1.part((slice(None), rs)).map(lambda t: t.reshape(1, -1, 1))
                a = a1[:, rs].reshape(1, -1, k)
                self._chunk(a, cols, qa, qc, entries[:, :, rs, cs], room)
        return Kernel(out[0], out[1], same_position=False)

    def _chunk(
        self,
        a: torch.Tensor,
        cols: torch.Tensor,
        qa: Side,
        qc: Side,
        out: torch.Tensor,
        room: torch.Tensor,
    ) -> None:
        """One chunk of block 0: Σ¹ of rows a (B, g·R, K) against columns (B, g·C, K), B = 1
        or one per image paired with itself, activated and pooled into ``out`` (2, B, R, C)
        (`window_sums_into`), in ``room`` (`_chunk_arrays` of the chunk's entries at least, the
        same for all the chunks of a block: fewer sizes of blocks for the heap)."""
        shape = (self._chunk_arrays, len(a), a.shape[1], cols.shape[1])
        buffers = room[: math.prod(shape)].view(shape)
        if self.dual.block is not None:  # θ then K, Σ then K + T
            sigma = torch.bmm(a, cols.transpose(1, 2), out=buffers[1])
            activated(self.dual, sigma, None, qa, qc, self.scale(0), buffers[0])
        else:  # K, K + T, Σ (then ρ), Θ
            sigma = torch.bmm(a, cols.transpose(1, 2), out=buffers[2])
            ntk = buffers[3].copy_(sigma)
            kernels = activated(self.dual, sigma, ntk, qa, qc, self.scale(0))
            buffers[0].copy_(kernels[0])
            buffers[1].copy_(kernels[1])
        window_sums_into(buffers[:2], out, self._window)

    def _own_first_block(self, p: torch.Tensor, v: Side) -> Kernel:
        """Block 0 for the pairs (x, x) of n images with patches p (g, n, P, K) and terms v
        (n, g, P) (`patches`, `side`): (n, H', W', 1, H', W'), in chunks of images."""
        (oh, ow), n, g, scale = self._pooled_size(), p.shape[1], self._window, self.scale(0)
        if self.same_position:
            sigma = p[0].square().sum(-1).unflatten(-1, self.image_size)
            v = v.map(lambda t: t.reshape(n, oh, ow))
            return activate(Kernel(sigma, sigma.clone(), True), self.dual, v, v, scale)
        per = max(1, self.chunk_entries(n, n, p.device) // (g * oh * ow) ** 2)
        out = p.new_empty(2, n, oh, ow, 1, oh, ow)
        entries = out.view(2, n, oh * ow, oh * ow)
        room = p.new_empty(self._chunk_arrays * min(per, n) * (g * oh * ow) ** 2)
        for i in range(0, n, per):
            pi = p[:, i : i + per].transpose(0, 1).flatten(1, 2)
            vi = v.part(slice(i, i + per)).map(lambda t: t.flatten(1))
            qa, qc = vi.map(lambda t: t[:, :, None]), vi.map(lambda t: t[:, None])
            self._chunk(pi, pi, qa, qc, entries[:, i : i + per], room)
        return Kernel(out[0], out[1], same_position=False)

    def _chunk_shape(self, chunk: int, n2: int) -> tuple[int, int]:
        """(positions of x after block 0's pooling, images x') of a chunk of ≤ ``chunk``
        entries (at least `_smallest_chunk`: one position against one image)."""
        unit = self._smallest_chunk()
        images = max(1, min(n2, chunk // unit))
        return max(1, chunk // (unit * images)), images

    def single(self, x: torch.Tensor, budget: int) -> tuple[list[torch.Tensor], Pair]:
        """The per-input terms of each block's activation (`side`: 3 tensors per block,
        for block 0 (N, g, P) as its patches are ordered (`patches`), for the others
        (N, H_l, W_l)) and the kernels of (x, x)."""
        # A batch of n images holds n pairs and n images' patches (`chunk_entries`), which
        # take twice their size while they are made (`patches`).
        held = 16 * self._pair_entries()[1]
        per_image = max(self.entry_bytes(), held + 2 * self._patch_bytes())
        batch = tile_entries(budget, x.device, per_image, self.tile_bytes())
        terms: list[list[Side]] = [[] for _ in range(self.depth)]

        def own(block: int, kernel: Kernel) -> tuple[Side, Side]:
            terms[block].append(side(kernel.variances(), self.scale(block)))
            return kernel.spread(terms[block][-1], terms[block][-1], own=True)

        def first(images: torch.Tensor) -> Kernel:
            p = self.patches(images)
            terms[0].append(side(p.square().sum(-1).transpose(0, 1), self.scale(0)))
            return self._own_first_block(p, terms[0][-1])

        outputs = [self.network(first(x[i : i + batch]), own) for i in range(0, len(x), batch)]
        nngp, ntk = (torch.cat(parts).reshape(-1) for parts in zip(*outputs, strict=True))
        return [torch.cat(t) for block in terms for t in zip(*block, strict=True)], (nngp, ntk)

    def tile(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        v1: list[torch.Tensor],
        v2: list[torch.Tensor],
        out: Pair | None = None,
    ) -> Pair:
        """(NNGP, NTK) of shape (N1, N2) for rows x1, columns x2 with per-input terms v1, v2
        (`single`), copied into ``out`` when given (`_infinite_tiles.Recursion.tile`)."""

        def given(block: int, kernel: Kernel) -> tuple[Side, Side]:
            a, b = (Side(*v[3 * block : 3 * block + 3]) for v in (v1, v2))
            return kernel.spread(a, b, own=False)

        chunk = self.chunk_entries(len(x1) * len(x2), len(x1) + len(x2), x1.device)
        a1, a2 = (self.patches(x).flatten(1, 2) for x in (x1, x2))
        q1, q2 = (Side(*v[:3]).map(lambda t: t.transpose(0, 1).flatten(1)) for v in (v1, v2))
        first = self.first_block(a1, a2, q1, q2, chunk)
        del a1, a2
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
        return self._window * math.prod(self.image_size)

    def chunk_entries(self, pairs: int, images: int, device: torch.device) -> int:
        """Entries of block 0's chunks for a tile of ``pairs`` pairs of ``images`` images: the
        tile's memory (`_infinite_tiles.tile_memory`: its share of the budget, ≥ ``pairs ·
        entry_bytes + tile_bytes``) less block 0's outputs and the images' patches
        (`patches`), at least `_smallest_chunk` (a tile with few images on a side, e.g.
        1 × m, can exceed its memory by its patches)."""
        entry, tile = self.entry_bytes(), self.tile_bytes()
        workers = concurrent_tiles(self.budget, device, entry, tile)
        room = tile_memory(self.budget, device, workers) - pairs * 16 * self._pair_entries()[1]
        room -= images * self._patch_bytes()
        return max(room // self._chunk_entry_bytes(), self._smallest_chunk())

    def _patch_bytes(self) -> int:
        """Bytes of one image's patches (`patches`): H·W positions × (C·k² + 1)."""
        return 8 * math.prod(self.image_size) * (self.channels * self.kernel_size**2 + 1)

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
        """Working memory of a tile besides ``entry_bytes`` per pair: room for a chunk of
        block 0 of `_CHUNK_ENTRIES` (but at most half the budget, and at least
        `_smallest_chunk`) × `_per_position_pair`, which every tile holds once, however few
        its pairs."""
        if self.same_position:
            return 0
        per = self._chunk_entry_bytes()
        return per * max(min(_CHUNK_ENTRIES, self.budget // (2 * per)), self._smallest_chunk())

    @property
    def _chunk_arrays(self) -> int:
        """Arrays of a chunk of block 0 (`_chunk`): K and K + T with `Dual.block` (θ, then
        K, and Σ, then K + T), else those and Σ, Θ (the dual makes its own arrays)."""
        return 2 if self.dual.block is not None else 4

    def _chunk_entry_bytes(self) -> int:
        """Working memory per entry of a chunk of block 0: with `Dual.block` its
        `_chunk_arrays` and the quarter arrays of their window sums (`window_sums_into`),
        else `_per_position_pair`."""
        if self.dual.block is not None:
            return 10 * self._chunk_arrays
        return self._per_position_pair()

    def _per_position_pair(self) -> int:
        """Working memory per position pair of a block: with `Dual.block`,
        `_IN_PLACE_ARRAYS`; else the dual's arrays (measured for an MLP layer,
        `Dual.arrays`) and `_BLOCK_ARRAYS`."""
        if self.dual.block is not None:
            return int(8 * _IN_PLACE_ARRAYS)
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
            pair of a tile: see the module docstring (7.2 kB per pair and 0.33 MB or half
            the budget per tile for 8×8 images, ReLU; ~8× that per pair for the series).

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
        channels=x1.shape[1],
        budget=resolve_budget(memory_budget, x1.device),
    )
    return rec, x1, x2, rec.budget


def _images(x: object, argument: str, pools: int) -> torch.Tensor:
    """A finite (N, C, H, W) float tensor, H and W divisible by 2^pools, as float64."""
    x = finite_batch(x, argument)
    if x.dim() != 4 or 0 in x.shape:
        raise ValueError(f"{argument}: expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    pooled_size(tuple(x.shape[2:]), pools, argument)
    return x.detach().to(torch.float64)
