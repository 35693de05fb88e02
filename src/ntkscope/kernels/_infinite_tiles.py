"""Tiles of input pairs for the infinite-width kernels: memory per entry and filling.

Every infinite-width recursion (MLP, CNN) needs, for an entry (x, x'), the entry's own
covariances and the variances of x and of x' at every layer. So a `Recursion` first runs
on each input alone (its variances and the kernels of the pair (x, x)), then on tiles of
pairs, each costing the same working memory per entry. For x2 = x1 only tiles on and above
the diagonal are computed, the others mirrored, and the diagonal is written from the
single-input run, so that it equals ``diagonal=True`` bit for bit. Each tile is computed
into its block of the kernel (`Recursion.tile`'s ``out``), which the MLP's in-place layers
use as working memory (`ntkscope.kernels.infinite`).

On CPU a small budget's tiles are computed two (or as many as torch has threads) at a time,
each on one torch thread in its share of the budget (`concurrent_tiles`, `_threads.run_jobs`): the
kernel is the same, bit for bit, as that of the same tiles computed one after another on one
thread. The tiles' shape then depends on torch's thread count (`tile_entries`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from ntkscope._checks import boolean
from ntkscope.kernels._threads import run_jobs
from ntkscope.kernels.dual import Dual, Pair

_CPU_TILE_BYTES = 2**22
"""Largest tile working memory on CPU: tiles that fit in cache ran fastest (measured). At
8 MiB the ReLU MLP's arrays (then 72 bytes per entry: 0.9 MiB each) came from the heap, which
grew to 16–18 MiB beyond the kernel, and ran 5–10% slower than at 4 MiB (5.1 MiB, measured
with benchmarks/memory_budget.py's MLP case). With the in-place ReLU layer (16 bytes per
entry beyond the kernel: 262,144 entries) a 2 MiB cap ran 1.2–1.3× slower and 8 MiB no
faster (N = 4,000, 2 threads, load 2–3)."""

_CPU_ARRAY_ENTRIES = (2**20 - 2**12) // 8
"""Most entries per tile on CPU: a float64 array of the tile stays under 1 MiB, glibc's mmap
threshold under an explicit budget (`ntkscope.kernels._tiling`), and comes from the heap
instead of being mapped and faulted in again for every tile (1.1–1.2× the CPU time,
measured there). It binds only for the MLP's in-place layers (16 bytes per entry), whose
arrays would reach 2 MiB at the 4 MiB cap; the other recursions' entries take ≥ 40 bytes."""

_MIN_SHARE = 2**20
"""Smallest share of the budget per concurrent tile (`concurrent_tiles`)."""

_MAX_CONCURRENT_ENTRY = 2**10
"""Largest memory per entry (and per tile) of a recursion whose tiles run concurrently: an
MLP's entries (16 bytes for ReLU) are one value per pass, a CNN's (8×8 images: 10 kB per
pair, ReLU) are pairs of images whose passes shrink with each pooling, to a few hundred
values in the last block of a 1 MiB tile; two such tiles at a time ran slower than one
(Myrtle CNN 8×8, 2 MiB, quiet machine, before its chunks were sized by the budget: 2.90×
the default's time against 1.86×, measured)."""

OUTPUT_BYTES = 16
"""Bytes of an entry's NNGP and NTK (float64), which a tile writes into the kernel's memory
(`Recursion.tile`'s ``out``) and which `Recursion.entry_bytes` does not count."""

Tile = Callable[[slice, slice, Pair], None]
"""``tile(rows, cols, out)`` writes the (NNGP, NTK) of the rows and columns into ``out``."""


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
        out: Pair | None = None,
    ) -> Pair:
        """(NNGP, NTK) of shape (N1, N2) for rows x1, columns x2 with variances v1, v2.

        ``out``: two (N1, N2) float64 tensors (views of the kernels) that receive them and
        are returned; None: new tensors (`OUTPUT_BYTES` per entry beyond `entry_bytes`).
        """
        ...

    def entry_bytes(self) -> int:
        """Working memory per entry of a tile written into ``out`` (`tile`)."""
        ...

    def tile_bytes(self) -> int:
        """Working memory of a tile besides ``entry_bytes`` per entry (0 for most)."""
        ...


def pairwise_kernels(
    rec: Recursion,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    *,
    diagonal: bool,
    budget: int,
    concurrent: bool = True,
) -> Pair:
    """(NNGP, NTK) of shape (N1, N2), (N1, N1) for x2 = None, or (N1,) when ``diagonal``;
    ``concurrent``: False computes the tiles one at a time whatever the budget."""
    v1, diag1 = rec.single(x1, budget)
    if diagonal:
        return diag1
    workers = (
        concurrent_tiles(budget, x1.device, rec.entry_bytes(), rec.tile_bytes())
        if concurrent
        else 1
    )
    entries = tile_entries(budget, x1.device, rec.entry_bytes(), rec.tile_bytes(), workers)
    if x2 is None:
        return fill_symmetric(
            lambda rs, cs, out: rec.tile(x1[rs], x1[cs], _take(v1, rs), _take(v1, cs), out),
            entries,
            diag1,
            workers,
        )
    v2 = rec.single(x2, budget)[0]
    return fill_rectangular(
        lambda rs, cs, out: rec.tile(x1[rs], x2[cs], _take(v1, rs), _take(v2, cs), out),
        len(x1),
        len(x2),
        entries,
        x1,
        workers,
    )


def _take(variances: Sequence[torch.Tensor], examples: slice) -> list[torch.Tensor]:
    return [v[examples] for v in variances]


def written(kernels: Pair, out: Pair | None) -> Pair:
    """``kernels``, copied into ``out`` and ``out`` returned when given (`Recursion.tile`)."""
    if out is None:
        return kernels
    for view, kernel in zip(out, kernels, strict=True):
        view.copy_(kernel)
    return out


def entry_bytes(dual: Dual) -> int:
    """Working memory per kernel entry of a recursion that applies ``dual`` once per layer."""
    return 8 * dual.arrays


def tile_entries(
    budget: int,
    device: torch.device,
    bytes_per_entry: int,
    bytes_per_tile: int = 0,
    workers: int | None = None,
) -> int:
    """Entries per tile (at least one) when ``workers`` (default: `concurrent_tiles`) tiles
    share ``budget``: each tile's share, capped at 4 MiB on CPU, less ``bytes_per_tile``
    (what a tile holds whatever its size), over ``bytes_per_entry``; on CPU at most
    `_CPU_ARRAY_ENTRIES`."""
    if workers is None:
        workers = concurrent_tiles(budget, device, bytes_per_entry, bytes_per_tile)
    entries = (tile_memory(budget, device, workers) - bytes_per_tile) // bytes_per_entry
    if device.type != "cpu":
        return max(1, entries)
    return max(1, min(entries, _CPU_ARRAY_ENTRIES))


def tile_memory(budget: int, device: torch.device, workers: int) -> int:
    """Working memory of one tile when ``workers`` tiles share ``budget``: its share, capped
    at 4 MiB on CPU (`tile_entries`)."""
    share = budget // workers
    return share if device.type != "cpu" else min(share, _CPU_TILE_BYTES)


def check_second_inputs(x1: torch.Tensor, x2: torch.Tensor | None, diagonal: bool) -> None:
    """Refuse a ``diagonal`` that is not a bool, and x2 with ``diagonal`` or unlike x1 in
    per-example shape or device, naming the argument."""
    boolean(diagonal, "diagonal")
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


def fill_rectangular(
    tile: Tile, n1: int, n2: int, entries: int, like: torch.Tensor, workers: int = 1
) -> Pair:
    """(N1, N2) outputs (dtype and device of ``like``) from tiles of ≤ ``entries`` entries."""
    rows, cols = tile_shape(n1, n2, entries)
    nngp = like.new_empty(n1, n2)
    ntk = torch.empty_like(nngp)

    def fill(rs: slice, cs: slice) -> None:
        tile(rs, cs, (nngp[rs, cs], ntk[rs, cs]))

    jobs = (
        functools.partial(fill, slice(r, r + rows), slice(c, c + cols))
        for r in range(0, n1, rows)
        for c in range(0, n2, cols)
    )
    run_jobs(jobs, workers)
    return nngp, ntk


def fill_symmetric(tile: Tile, entries: int, diagonal: Pair, workers: int = 1) -> Pair:
    """Symmetric (N, N) outputs from the tiles on and above the diagonal.

    ``diagonal``: the (N,) NNGP and NTK of the pairs (x, x), written onto the diagonal.
    """
    n = diagonal[0].shape[0]
    side = tile_shape(n, n, entries)[0]
    nngp = diagonal[0].new_empty(n, n)
    ntk = torch.empty_like(nngp)

    def fill(rs: slice, cs: slice) -> None:
        blocks = nngp[rs, cs], ntk[rs, cs]
        tile(rs, cs, blocks)
        for out, block, values in zip((nngp, ntk), blocks, diagonal, strict=True):
            if rs == cs:
                block.copy_(diagonal_tile(block, values[rs]))
            else:
                out[cs, rs] = block.T

    jobs = (
        functools.partial(fill, slice(r, r + side), slice(c, c + side))
        for r in range(0, n, side)
        for c in range(r, n, side)
    )
    run_jobs(jobs, workers)
    return nngp, ntk


def concurrent_tiles(budget: int, device: torch.device, entry: int, tile: int = 0) -> int:
    """Tiles computed at once, each in its share of ``budget``: on CPU, for a budget below the
    tile cap (4 MiB) that gives every one of torch's threads ≥ 1 MiB holding a tile of at
    least one entry (``entry`` bytes, plus ``tile`` per tile), one tile per thread; else 1.

    Why: torch splits an elementwise pass over its threads only beyond 32,768 entries (from
    2,048 for sqrt, acos, ...), and each split pays a start and a join, or waits for a
    descheduled thread on a loaded machine, so the passes of a tile under a small budget (a
    ReLU MLP's 2 MiB: 32,768 entries before its in-place layers, 130,560 since) ran mostly
    on one thread. Two such tiles at once, one
    thread each, need no split (ReLU MLP, N = 2,000, 2 threads, nearly quiet machine: 2 MiB
    1.46× the default's time against 1.57× one tile at a time; loaded machine: 7× faster
    than one at a time). Every torch call releases Python's lock and takes it back, so two
    threads wait for each other at every call: shares of 0.5 MiB ran slower than one tile at
    a time (1 MiB budget: 2.34× against 1.66×, same run), hence the 1 MiB floor. Entries
    larger than 1 KiB (a CNN's pairs of images) are not run concurrently: passes over a
    tile of few entries are short (`_MAX_CONCURRENT_ENTRY`). The MLP's in-place ReLU layers
    do not run concurrently (`ntkscope.kernels.infinite`): two 65,536-entry tiles at a time
    ran in 0.76–0.94× the time of one 131,072-entry tile (2 MiB, N = 4,000, 2 threads, load
    1–2) but their kernel differed from run to run by an ulp in a few entries (not found
    why; one at a time it does not).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or budget >= _CPU_TILE_BYTES:
        return 1
    if entry + tile > _MAX_CONCURRENT_ENTRY:
        return 1
    workers = min(threads, budget // _MIN_SHARE)
    return workers if workers > 1 and budget // workers >= entry + tile else 1
