"""Memory-bounded tiling of N1×N2 kernel computations.

A kernel strategy maps a block of examples to per-example *features* (activations and
output gradients, Jacobians, or the inputs themselves) and a pair of feature blocks to a
kernel tile. The working memory of one tile is ``(b1 + b2) · feature_bytes +
b1 · b2 · pair_bytes``; `plan_tiles` picks the largest square tile that fits the budget,
and caches the column features when all of them fit in half of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope._checks import memory_bytes

_MIN_SPLIT = 128
"""Symmetric kernels are not split into tiles narrower than this (GEMM efficiency)."""

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


def resolve_budget(memory_budget: int | float | str | None, device: torch.device) -> int:
    """The budget in bytes: parsed from the argument, or the device default."""
    if memory_budget is None:
        return default_memory_budget(device)
    return memory_bytes(memory_budget, "memory_budget")


@dataclass(frozen=True)
class TilePlan:
    """Square tiles of ``block`` examples; ``cache_columns``: column features kept."""

    block: int
    cache_columns: bool


def plan_tiles(
    n1: int, n2: int, feature_bytes: int, pair_bytes: int, budget: int, symmetric: bool = False
) -> TilePlan:
    """Largest tile ``b`` with ``(b + b') · feature_bytes + b² · pair_bytes <= budget``.

    For a symmetric kernel with cached features, tiles are at most max(N/4, 128) wide so
    that only 10 of 16 tiles (the upper triangle) are computed, the rest mirrored, while
    each tile stays large enough for an efficient GEMM.

    Raises:
        ValueError: when not even one example fits the budget.
    """

    def largest(fixed: float, per_row: float) -> int:
        # solve pair_bytes·b² + per_row·b + fixed <= budget for the largest integer b
        rest = budget - fixed
        if rest <= 0:
            return 0
        disc = per_row**2 + 4 * pair_bytes * rest
        return (
            int((-per_row + math.sqrt(disc)) / (2 * pair_bytes))
            if pair_bytes
            else int(rest // max(per_row, 1))
        )

    cached = largest(n2 * feature_bytes, feature_bytes)
    if cached >= 1 and n2 * feature_bytes <= budget / 2:
        widest = max(-(-n1 // 4), _MIN_SPLIT) if symmetric else max(n1, n2)
        return TilePlan(min(cached, widest), cache_columns=True)
    block = largest(0, 2 * feature_bytes)
    if block < 1:
        need = 2 * feature_bytes + pair_bytes
        raise ValueError(
            f"memory_budget: {budget} bytes is too small; one pair of examples needs {need} bytes"
        )
    return TilePlan(min(block, max(n1, n2)), cache_columns=False)


class Strategy(Protocol):
    """What the tiling needs from an eNTK method (see `ntkscope.kernels.empirical`)."""

    feature_bytes: int
    pair_bytes: int

    def features(self, x: Batch) -> Any: ...

    def pair(self, fa: Any, fb: Any) -> torch.Tensor: ...

    def diagonal(self, fa: Any) -> torch.Tensor: ...


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _tile_pairs(rows: list[slice], cols: list[slice], symmetric: bool) -> Iterator[tuple]:
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if not symmetric or j >= i:
                yield i, r, j, c


def tiled_kernel(
    strategy: Strategy,
    x1: Batch,
    x2: Batch | None,
    out: torch.Tensor,
    budget: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Fill ``out`` (N1, N2, ...) tile by tile; ``x2=None`` means x2 = x1, computed once.

    For x2 = x1 only tiles on and above the diagonal are computed; the others are their
    transposes (Θ(x', x) = Θ(x, x')ᵀ, output axes swapped too).
    """
    symmetric = x2 is None
    x2 = x1 if x2 is None else x2
    n1, n2 = _batch.size(x1), _batch.size(x2)
    plan = plan_tiles(n1, n2, strategy.feature_bytes, strategy.pair_bytes, budget, symmetric)
    rows, cols = _blocks(n1, plan.block), _blocks(n2, plan.block)
    cache = [strategy.features(_batch.take(x2, c)) for c in cols] if plan.cache_columns else None
    pairs = list(_tile_pairs(rows, cols, symmetric))
    row_index, row_features = -1, None
    for done, (i, r, j, c) in enumerate(pairs, start=1):
        if i != row_index:
            row_index = i
            row_features = (
                cache[i]
                if cache is not None and symmetric
                else strategy.features(_batch.take(x1, r))
            )
        if symmetric and j == i:
            col_features = row_features
        else:
            col_features = cache[j] if cache is not None else strategy.features(_batch.take(x2, c))
        tile = strategy.pair(row_features, col_features)
        out[r, c] = tile
        if symmetric and j != i:
            out[c, r] = tile.transpose(0, 1).transpose(-1, -2) if tile.dim() == 4 else tile.T
        if progress is not None:
            progress(done, len(pairs))
    return out


def tiled_diagonal(
    strategy: Strategy,
    x: Batch,
    out: torch.Tensor,
    budget: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Fill ``out`` (N, ...) with Θ(x_n, x_n), block by block."""
    n = _batch.size(x)
    plan = plan_tiles(n, 0, strategy.feature_bytes, 0, budget // 2)
    blocks = _blocks(n, plan.block)
    for done, r in enumerate(blocks, start=1):
        out[r] = strategy.diagonal(strategy.features(_batch.take(x, r)))
        if progress is not None:
            progress(done, len(blocks))
    return out
