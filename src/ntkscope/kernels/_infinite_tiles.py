"""Tiles of input pairs for the infinite-width kernels: memory per entry and filling.

Every infinite-width recursion (MLP, CNN) needs, for an entry (x, x'), the entry's own
covariances and the variances of x and of x' at every layer. So a `Recursion` first runs
on each input alone (its variances and the kernels of the pair (x, x)), then on tiles of
pairs, each costing the same working memory per entry. For x2 = x1 only tiles on and above
the diagonal are computed, the others mirrored, and the diagonal is written from the
single-input run, so that it equals ``diagonal=True`` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from ntkscope.kernels.dual import Dual, Pair

_CPU_TILE_BYTES = 2**22
"""Largest tile working memory on CPU: tiles that fit in cache ran fastest (measured). At
8 MiB the ReLU MLP's arrays (72 bytes per entry: 0.9 MiB each) came from the heap, which
grew to 16–18 MiB beyond the kernel, and ran 5–10% slower than at 4 MiB (5.1 MiB, measured
with benchmarks/memory_budget.py's MLP case)."""

Tile = Callable[[slice, slice], Pair]
"""``tile(rows, cols)`` -> (NNGP, NTK) of shape (len(rows), len(cols))."""


class Recursion(Protocol):
    """An infinite-width kernel recursion, as `pairwise_kernels` drives it."""

    def single(self, x: torch.Tensor, budget: int) -> tuple[Sequence[torch.Tensor], Pair]:
        """(variances, (nngp, ntk)) of each input x paired with itself.

        variances: what `tile` needs of each input, tensors indexed by example on dim 0;
        nngp, ntk: (N,) kernels of the pairs (x, x). Working memory within ``budget``.
        """
        ...

    def tile(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        v1: Sequence[torch.Tensor],
        v2: Sequence[torch.Tensor],
    ) -> Pair:
        """(NNGP, NTK) of shape (N1, N2) for rows x1, columns x2 with variances v1, v2."""
        ...

    def entry_bytes(self) -> int:
        """Working memory per entry of a tile."""
        ...

    def tile_bytes(self) -> int:
        """Working memory of a tile besides ``entry_bytes`` per entry (0 for most)."""
        ...


def pairwise_kernels(
    rec: Recursion, x1: torch.Tensor, x2: torch.Tensor | None, *, diagonal: bool, budget: int
) -> Pair:
    """(NNGP, NTK) of shape (N1, N2), (N1, N1) for x2 = None, or (N1,) when ``diagonal``."""
    v1, diag1 = rec.single(x1, budget)
    if diagonal:
        return diag1
    entries = tile_entries(budget, x1.device, rec.entry_bytes(), rec.tile_bytes())
    if x2 is None:
        return fill_symmetric(
            lambda rs, cs: rec.tile(x1[rs], x1[cs], _take(v1, rs), _take(v1, cs)), entries, diag1
        )
    v2 = rec.single(x2, budget)[0]
    return fill_rectangular(
        lambda rs, cs: rec.tile(x1[rs], x2[cs], _take(v1, rs), _take(v2, cs)),
        len(x1),
        len(x2),
        entries,
        x1,
    )


def _take(variances: Sequence[torch.Tensor], examples: slice) -> list[torch.Tensor]:
    return [v[examples] for v in variances]


def entry_bytes(dual: Dual) -> int:
    """Working memory per kernel entry of a recursion that applies ``dual`` once per layer."""
    return 8 * dual.arrays


def tile_entries(
    budget: int, device: torch.device, bytes_per_entry: int, bytes_per_tile: int = 0
) -> int:
    """Entries per tile (at least one) within ``budget``, capped at 4 MiB on CPU: the budget
    less ``bytes_per_tile`` (what a tile holds whatever its size), over ``bytes_per_entry``."""
    if device.type == "cpu":
        budget = min(budget, _CPU_TILE_BYTES)
    return max(1, (budget - bytes_per_tile) // bytes_per_entry)


def check_second_inputs(x1: torch.Tensor, x2: torch.Tensor | None, diagonal: bool) -> None:
    """Refuse x2 with ``diagonal`` or unlike x1 in per-example shape or device, naming ``x2``."""
    if x2 is None:
        return
    if diagonal:
        raise ValueError("x2: must be None when diagonal=True (the diagonal pairs x1 with itself)")
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x2: has examples of shape {tuple(x2.shape[1:])} but x1 has "
            f"{tuple(x1.shape[1:])} (shapes {tuple(x2.shape)} and {tuple(x1.shape)})"
        )
    if x2.device != x1.device:
        raise ValueError(f"x2: is on {x2.device} but x1 is on {x1.device}")


def tile_shape(n1: int, n2: int, entries: int) -> tuple[int, int]:
    """(rows, columns) of the tiles of an N1×N2 kernel: ≤ ``entries`` entries, near square.

    N1 = N2 (a symmetric kernel among them) gives square tiles, (side, side) with side =
    rows, as the tiled kernel store requires of a symmetric layout."""
    rows = min(n1, max(1, math.isqrt(entries)))
    return rows, rows if n1 == n2 else min(n2, max(1, entries // rows))


def diagonal_tile(block: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A tile on the diagonal of a symmetric kernel: its upper triangle mirrored onto the
    lower one (triu is slow on CPU), ``values`` (the single-input kernels) on its diagonal."""
    i = torch.arange(block.shape[0], device=block.device)
    block = torch.where(i[:, None] <= i, block, block.T)
    block.diagonal().copy_(values)
    return block


def fill_rectangular(tile: Tile, n1: int, n2: int, entries: int, like: torch.Tensor) -> Pair:
    """(N1, N2) outputs (dtype and device of ``like``) from tiles of ≤ ``entries`` entries."""
    rows, cols = tile_shape(n1, n2, entries)
    nngp = like.new_empty(n1, n2)
    ntk = torch.empty_like(nngp)
    for r in range(0, n1, rows):
        for c in range(0, n2, cols):
            rs, cs = slice(r, r + rows), slice(c, c + cols)
            nngp[rs, cs], ntk[rs, cs] = tile(rs, cs)
    return nngp, ntk


def fill_symmetric(tile: Tile, entries: int, diagonal: Pair) -> Pair:
    """Symmetric (N, N) outputs from the tiles on and above the diagonal.

    ``diagonal``: the (N,) NNGP and NTK of the pairs (x, x), written onto the diagonal.
    """
    n = diagonal[0].shape[0]
    side = tile_shape(n, n, entries)[0]
    nngp = diagonal[0].new_empty(n, n)
    ntk = torch.empty_like(nngp)
    for r in range(0, n, side):
        for c in range(r, n, side):
            rs, cs = slice(r, r + side), slice(c, c + side)
            for out, block, values in zip((nngp, ntk), tile(rs, cs), diagonal, strict=True):
                if r == c:
                    block = diagonal_tile(block, values[rs])
                out[rs, cs] = block
                out[cs, rs] = block.T
    return nngp, ntk
