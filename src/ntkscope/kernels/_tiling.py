"""Memory-bounded tiling of N1×N2 kernel computations.

A kernel strategy maps a block of examples to per-example *features* (activations and
output gradients, Jacobians, or the inputs themselves) and a pair of feature blocks to a
kernel tile. Examples go in chunks of c (one features call each); K chunks of column
features stay resident while the row chunks stream past them, so the working memory is
``K·c·F + c·(F + E) + c²·P`` (`Cost`: features, transient memory of the features call,
temporaries of one pair), within the budget (`plan_tiles`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope._checks import memory_bytes

_MIN_SPLIT = 128
"""Symmetric kernels are not split into tiles narrower than this (GEMM efficiency)."""

_MAX_STREAM = 1024
"""Streamed chunks are not made wider than this (wider tiles gain nothing per pair)."""

_STREAM_SHARE = 16
"""A streamed chunk takes at most 1/_STREAM_SHARE of the budget; the rest keeps columns."""

Progress = Callable[[int, int], None]
"""Called as ``progress(tiles_done, tiles_total)`` after each tile."""


def default_memory_budget(device: torch.device) -> int:
    """Half of the free memory of a CUDA device, a quarter of available RAM otherwise."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # platforms without sysconf: assume 4 GB free
        available = 4 * 10**9
    return max(available // 4, 64 * 2**20)


def _heap_thresholds(explicit_budget: bool) -> None:
    """Set glibc's mmap and trim thresholds for the process, by the kind of budget.

    glibc raises the mmap threshold to the size of each large block freed (up to 32 MiB)
    and the trim threshold to twice that, after which blocks of that size come from the
    heap.

    - An explicit budget fixes them at 1 MiB and 8 MiB: with glibc's own rule, freed tiles
      stayed resident and the peak resident memory of a tiled eNTK reached twice its budget
      (measured). Blocks of 1 MiB or more are then mapped and unmapped on their own, and
      the heap keeps at most 8 MiB free at its top. The cost is page faults on every large
      block (2× slower infinite kernels at glibc's initial 128 KiB; at 4 MiB the eNTK's
      gradient blocks stayed resident again). The trim threshold is twice the largest tile
      of the infinite kernels on CPU (4 MiB, `_infinite_tiles`), whose arrays come from
      the heap: at 2 MiB every tile faulted its arrays in again (1.1–1.2× the CPU time of
      the default budget; 1.0× at 8 MiB, measured), and the eNTK's working memory under a
      small budget grew by ~2 MiB (the tests' allowance is 12 MiB).
    - The default budget fixes them at 32 MiB (glibc's own largest) and 256 MiB, so that a
      kernel computed again (`PreparedNTK`, a recorder during training) finds its blocks
      resident: with glibc's rule the heap was trimmed below each call's blocks and an MLP
      eNTK (N = 128, full) took ~2,300 page faults per call, ~50 with a 64 MiB trim
      threshold; the ResNet row of ``benchmarks/entk.py`` (~90 MB of blocks freed at the
      heap's top per call) took ~20,000 at 64 MiB and ~0 at 256 MiB, 0.37 against 0.34 s
      of CPU time (measured); the heap then keeps up to 256 MiB free.

    Set at every call, since the last kernel's budget decides. No effect where the C
    library is not glibc.
    """
    if sys.platform != "linux":
        return
    mmap, trim = (2**20, 8 * 2**20) if explicit_budget else (32 * 2**20, 256 * 2**20)
    with contextlib.suppress(OSError, AttributeError):  # another C library: nothing to fix
        libc = _libc()
        libc.mallopt(_M_TRIM_THRESHOLD, trim)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""


def resolve_budget(memory_budget: int | float | str | None, device: torch.device) -> int:
    """The budget in bytes: parsed from the argument, or the device default.

    On CPU it also sets glibc's heap thresholds for the kind of budget (`_heap_thresholds`):
    without them, freed tiles can stay resident beyond an explicit budget, and a kernel
    computed again faults its blocks in again.
    """
    budget = None if memory_budget is None else memory_bytes(memory_budget, "memory_budget")
    if device.type == "cpu":
        _heap_thresholds(explicit_budget=budget is not None)
    return default_memory_budget(device) if budget is None else budget


@dataclass(frozen=True)
class TilePlan:
    """Chunks of ``chunk`` examples (one `Strategy.features` call each, one tile per pair of
    chunks); ``resident``: column chunks whose features are kept while row chunks stream."""

    chunk: int
    resident: int


Cost = tuple[int, int, int]
"""(F, P, E): bytes of one example's features, of one pair's temporaries in a tile, and
of the transient memory per example while its features are computed (autograd graph,
gradient buffers, copies)."""


def _largest(budget: float, per_row: float, pair: float) -> int:
    """The largest integer b ≥ 0 with ``pair·b² + per_row·b <= budget``."""
    if budget <= 0:
        return 0
    if not pair:
        return int(budget // max(per_row, 1))
    return int((-per_row + math.sqrt(per_row**2 + 4 * pair * budget)) / (2 * pair))


def plan_tiles(
    n1: int, n2: int, cost: Cost, budget: int, symmetric: bool = False, *, share: int = 1
) -> TilePlan:
    """Chunks whose working memory, ``K·c·F + c·(F + E) + c²·P`` for K resident column
    chunks of c examples, stays within ``budget // share``. The first that fits of:

    - *all columns resident* (``N2·F <= budget / 2``): every feature computed once; c as
      large as fits, for a symmetric kernel at most max(N/4, 128), so that only 10 of 16
      tiles (the upper triangle) are computed, the rest mirrored, while each tile stays
      large enough for an efficient GEMM;
    - *streamed*: c as large as 1/16 of the budget allows (128 to 1,024: small tiles are
      slower per pair) and as many resident chunks as fit in the rest: each row chunk
      before a group is recomputed for it (`_groups`), so the more columns stay resident
      the fewer are recomputed (MLP trace eNTK, N = 4,000, 256 MB: 1.38× the default's CPU
      time with 1/4 of the budget streamed, 1.20× with 1/16, measured);
    - *one resident chunk* of the largest c that fits.

    ``n2 = 0`` plans the diagonal Θ(x_n, x_n): chunks of c examples, ``c·(F + E)``.

    Args:
        share: the caller plans with ``budget // share`` and keeps the rest (the diagonal
            keeps half for the kernel's use of the features); a refusal names ``budget``,
            the caller's, with what one example or pair needs of it.

    Raises:
        ValueError: when not even one example fits the budget.
    """
    feature, pair, extract = cost
    planned = budget // share
    plan = _plan(n1, n2, cost, planned, symmetric)
    if plan is None:
        if n2 == 0:
            need, what = feature + extract, " for diagonal=True; one example needs"
        else:
            need, what = 2 * feature + extract + pair, "; one pair of examples needs"
        raise ValueError(f"memory_budget: {budget} bytes is too small{what} {share * need} bytes")
    return plan


def _plan(n1: int, n2: int, cost: Cost, budget: int, symmetric: bool) -> TilePlan | None:
    """`plan_tiles` within ``budget``, or None when not even one example fits."""
    feature, pair, extract = cost
    if n2 * feature <= budget / 2:
        widest = min(max(-(-n1 // 4), _MIN_SPLIT), n1) if symmetric else max(n1, n2)
        chunk = min(_largest(budget - n2 * feature, feature + extract, pair), widest)
        if chunk >= 1:
            return TilePlan(chunk, -(-n2 // chunk))
    stream = _largest(budget / _STREAM_SHARE, feature + extract, pair)
    chunk = min(n1, n2, max(min(stream, _MAX_STREAM), _MIN_SPLIT))
    rest = budget - chunk * (feature + extract) - chunk**2 * pair
    if chunk >= 1 and rest > 0:
        resident = int(rest // (chunk * feature)) if feature else -(-n2 // chunk)
        if resident >= 1:
            return TilePlan(chunk, resident)
    chunk = min(_largest(budget, 2 * feature + extract, pair), n1, n2)
    return TilePlan(chunk, 1) if chunk >= 1 else None


class Strategy(Protocol):
    """What the tiling needs from an eNTK method (see `ntkscope.kernels.empirical`)."""

    feature_bytes: int
    pair_bytes: int
    extract_bytes: int

    def features(self, x: Batch) -> Any: ...

    def pair(self, fa: Any, fb: Any) -> torch.Tensor: ...

    def symmetric(self, fa: Any) -> torch.Tensor:
        """`pair` of a block with itself, exactly symmetric (`symmetric_tile`)."""
        ...

    def diagonal(self, fa: Any) -> torch.Tensor: ...


def cost(strategy: Strategy) -> Cost:
    """(F, P, E) of a strategy (`Cost`)."""
    return strategy.feature_bytes, strategy.pair_bytes, strategy.extract_bytes


def transposed(tile: torch.Tensor) -> torch.Tensor:
    """Θ(x', x) from Θ(x, x'): examples swapped, and output axes too in full mode."""
    return tile.transpose(0, 1).transpose(-1, -2) if tile.dim() == 4 else tile.T


def symmetric_tile(tile: torch.Tensor) -> torch.Tensor:
    """A tile on the diagonal of Θ(x, x) made exactly symmetric, Θ(x', x) = Θ(x, x')ᵀ (a GEMM
    of a block with itself need not be): its upper triangle (pairs n ≤ m) mirrored onto the
    lower one, and in full mode each example's own O×O block from its upper triangle."""
    i = torch.arange(tile.shape[0], device=tile.device)
    upper = (i[:, None] <= i).view(*tile.shape[:2], *[1] * (tile.dim() - 2))
    out = torch.where(upper, tile, transposed(tile))
    if tile.dim() == 4:
        own = out.diagonal(dim1=0, dim2=1)  # (O, O, n): Θ(x_n, x_n)
        o = torch.arange(tile.shape[2], device=tile.device)
        own.copy_(torch.where((o[:, None] <= o)[:, :, None], own, own.transpose(0, 1)))
    return out


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _groups(chunks: int, resident: int, symmetric: bool) -> list[range]:
    """Groups of at most ``resident`` column chunks, in the order they are made resident.

    For x2 = x1 the row chunks before a group are recomputed for it, so the smallest group
    (the remainder) comes first: with G groups, (G − 1)·(remainder) + resident·(G − 1)(G − 2)/2
    chunks are recomputed instead of resident·G(G − 1)/2 (at G = 2: the remainder, not a
    whole group). Without symmetry every group streams all rows, in any order.
    """
    first = chunks - resident * ((chunks - 1) // resident) if symmetric else resident
    starts = [0, *range(first, chunks, resident)]
    return [range(a, b) for a, b in zip(starts, [*starts[1:], chunks], strict=True)]


def _count_tiles(n_rows: int, n_cols: int, symmetric: bool) -> int:
    return n_rows * (n_rows + 1) // 2 if symmetric else n_rows * n_cols


def tiled_kernel(
    strategy: Strategy,
    x1: Batch,
    x2: Batch | None,
    out: torch.Tensor,
    budget: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Fill ``out`` (N1, N2, ...) tile by tile; ``x2=None`` means x2 = x1, computed once.

    Groups of resident column chunks (`plan_tiles`); for each group, the row chunks stream
    past it. For x2 = x1 only tiles on and above the diagonal are computed (a row chunk
    that is resident is not recomputed); the others are their transposes
    (Θ(x', x) = Θ(x, x')ᵀ, output axes swapped too).

    Returns:
        ``out``; or, when x2 = x1 fits one tile, that tile itself, not copied into ``out``
        (its memory layout is the strategy's: e.g. a view of output-major (O, N, O, N)
        storage from `_gram.symmetric_sum`; the copy to ``out``'s layout took 0.9 ms of
        the 28 ms MLP eNTK, N = 128, full mode).
    """
    symmetric = x2 is None
    x2 = x1 if x2 is None else x2
    n1, n2 = _batch.size(x1), _batch.size(x2)
    plan = plan_tiles(n1, n2, cost(strategy), budget, symmetric)
    rows, cols = _blocks(n1, plan.chunk), _blocks(n2, plan.chunk)
    if symmetric and len(rows) == 1:
        tile = strategy.symmetric(strategy.features(x1))
        if progress is not None:
            progress(1, 1)
        return tile
    total, done = _count_tiles(len(rows), len(cols), symmetric), 0
    for group in _groups(len(cols), plan.resident, symmetric):
        start, kept = group.start, {}  # the previous group's features are freed first
        for j in group:
            kept[j] = strategy.features(_batch.take(x2, cols[j]))
        for i, r in enumerate(rows[: group.stop] if symmetric else rows):
            row_features = kept[i] if symmetric and i in kept else None
            for j in group if not symmetric else range(max(i, start), group.stop):
                if row_features is None:
                    row_features = strategy.features(_batch.take(x1, r))
                if symmetric and j == i:
                    tile = strategy.symmetric(row_features)
                else:
                    tile = strategy.pair(row_features, kept[j])
                out[r, cols[j]] = tile
                if symmetric and j != i:
                    out[cols[j], r] = transposed(tile)
                done += 1
                if progress is not None:
                    progress(done, total)
    return out


def tiled_diagonal(
    strategy: Strategy,
    x: Batch,
    out: torch.Tensor,
    budget: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Fill ``out`` (N, ...) with Θ(x_n, x_n), block by block: half the budget for the
    features, half for their use."""
    n, cost = _batch.size(x), (strategy.feature_bytes, 0, strategy.extract_bytes)
    plan = plan_tiles(n, 0, cost, budget, share=2)
    blocks = _blocks(n, plan.chunk)
    for done, r in enumerate(blocks, start=1):
        out[r] = strategy.diagonal(strategy.features(_batch.take(x, r)))
        if progress is not None:
            progress(done, len(blocks))
    return out
