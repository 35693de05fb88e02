"""Tiled array jobs: arrays computed tile by tile into a zarr store, resumable by chunk.

A job fills one or more arrays of the same layout, (N1, N2, *trailing), split into tiles
of ``tile`` = (rows, cols) entries. Every tile is one task: it computes each array's
block, writes it to that array's chunk (chunk = tile), and only then sets the tile's done
flag, itself one chunk of a ``done`` array so that concurrent workers never write the
same chunk. A tile is complete only when its flag is set: a chunk half written when the
process or worker was killed is computed again on the next run, and a finished one never.

``symmetric`` jobs (an N×N array with A[j, i] = A[i, j]ᵀ) compute and store the tiles on
and above the diagonal only; readers mirror them (`ntkscope.kernels.open`).

The store's attributes hold the job's identity (a mapping of strings: what was computed
from what) and its layout; running a job on a store made by a different one is refused,
naming what differs. Tasks run inline or on any ``dask.distributed`` cluster; the source
of tiles is scattered to every worker once (a worker deserializes it, with its model and
data, once, not once per tile). The runner knows nothing of what the arrays hold.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from ntkscope._checks import positive_int

DONE = "done"
"""Name of the per-tile completion flags inside a store."""
TILE_LOG = "NTKSCOPE_TILE_LOG"
"""Environment variable naming a file to which every tile task appends ``"i j"`` as it
starts, on every worker (tests and benchmarks count tile executions with it)."""
_JOB = "ntkscope_job"
"""Store attribute holding the layout and the identity."""


class TileSource(Protocol):
    """Computes the blocks of one tile: ``source(rows, cols)`` -> {array name: block}.

    Each block has shape (len(rows), len(cols), *trailing). The source is pickled to the
    workers once; state it builds lazily (a model, a plan) lives on the worker for every
    later tile.
    """

    def __call__(self, rows: slice, cols: slice) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True)
class Layout:
    """Arrays ``names`` of shape (N1, N2, *trailing) and ``dtype``, in tiles of ``tile``."""

    names: tuple[str, ...]
    shape: tuple[int, int]
    tile: tuple[int, int]
    dtype: str
    trailing: tuple[int, ...] = ()
    symmetric: bool = False

    def __post_init__(self) -> None:
        for n, argument in zip(self.shape + self.tile, ("N1", "N2", "tile", "tile"), strict=True):
            positive_int(n, argument)
        if self.symmetric and (self.shape[0] != self.shape[1] or self.tile[0] != self.tile[1]):
            raise ValueError(f"symmetric: needs a square array and tiles, got {self}")

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles along each axis."""
        return tuple(math.ceil(n / t) for n, t in zip(self.shape, self.tile, strict=True))

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile's (row, column) index; on and above the diagonal when symmetric."""
        rows, cols = self.grid
        return [(i, j) for i in range(rows) for j in range(cols) if not self.symmetric or j >= i]

    def slices(self, i: int, j: int) -> tuple[slice, slice]:
        """The rows and columns of tile (i, j)."""
        (n1, n2), (t1, t2) = self.shape, self.tile
        return slice(i * t1, min((i + 1) * t1, n1)), slice(j * t2, min((j + 1) * t2, n2))

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Layout:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class Progress(Protocol):
    """Counts tiles (`ntkscope.runner.progress.SweepProgress` is one)."""

    def resize(self, total: int) -> None:
        """``total`` tiles are to be computed now."""
        ...

    def advance(self, ok: bool) -> None:
        """One tile finished (``ok``) or failed."""
        ...


@dataclass(frozen=True)
class TileOutcome:
    """One tile's task: its indices, seconds spent, and the error if it raised."""

    i: int
    j: int
    seconds: float
    error: str | None = None


class TilesInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_job`. The store stays consistent: finished tiles are flagged done,
    tiles in flight are computed again when the same job is run again.

    Attributes:
        stored: tiles of the job complete in the store (before and during this run).
        tiles: tiles of the job.
    """

    def __init__(self, stored: int, tiles: int) -> None:
        super().__init__(f"{stored} of {tiles} tiles stored")
        self.stored, self.tiles = stored, tiles


@dataclass(frozen=True)
class JobReport:
    """What a run of a job did: tiles of the job, already complete, computed now, failed."""

    tiles: int
    skipped: int
    computed: int
    failed: tuple[TileOutcome, ...]


def _differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, str]:
    """Each key whose values differ, with both values."""
    keys = sorted(set(stored) | set(given))
    return {
        k: f"{k} (store: {stored.get(k)!r}, given: {given.get(k)!r})"
        for k in keys
        if stored.get(k) != given.get(k)
    }


def prepare(path: str | Path, layout: Layout, identity: Mapping[str, str]) -> Layout:
    """Create the store at ``path``, or check that an existing one holds this job.

    Returns:
        The layout to use: ``layout``, with the tiles of an existing store (which keeps
        its tiles when resumed under another memory budget).

    Raises:
        ValueError: naming ``store`` when its parent directory is missing, when ``path``
            is not a store of this kind, or when its layout or identity differ.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"store: directory {str(path.parent)!r} does not exist")
    if path.exists():
        stored = read_job(path)
        layout = replace(layout, tile=tuple(stored["layout"]["tile"]))
        # a key of both (dtype) is named once
        differs = _differences(stored["layout"], layout.to_json())
        differs |= _differences(stored["identity"], dict(identity))
        if differs:
            raise ValueError(
                f"store: {str(path)!r} holds a different job; differs: "
                + "; ".join(differs.values())
            )
        return layout
    group = zarr.open_group(path, mode="w-")
    chunks = layout.tile + layout.trailing
    for name in layout.names:
        group.create_array(
            name, shape=layout.shape + layout.trailing, chunks=chunks, dtype=layout.dtype,
            compressors=None, fill_value=0,
        )  # fmt: skip
    group.create_array(DONE, shape=layout.grid, chunks=(1, 1), dtype="uint8", fill_value=0)
    group.attrs[_JOB] = {"layout": layout.to_json(), "identity": dict(identity)}
    return layout


def read_job(path: str | Path) -> dict[str, Any]:
    """The ``layout`` and ``identity`` a store was made with; ValueError naming ``store``."""
    try:
        return dict(zarr.open_group(path, mode="r").attrs[_JOB])
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        raise ValueError(f"store: {str(path)!r} is not an ntkscope array store") from None


def done_tiles(path: str | Path) -> set[tuple[int, int]]:
    """Indices of the tiles whose done flag is set."""
    flags = zarr.open_array(Path(path) / DONE, mode="r")[...]
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(flags), strict=True)}


@functools.lru_cache(maxsize=64)
def _array(path: str, name: str, layout: Layout) -> zarr.Array:
    """An array of a store, opened for writing once per process and layout (opening reads
    its metadata: a large part of a small tile's time)."""
    return zarr.open_array(Path(path) / name, mode="r+")


def run_tile(source: TileSource, path: str, layout: Layout, i: int, j: int) -> TileOutcome:
    """Compute tile (i, j), write its chunks, then its done flag; errors are returned."""
    start = time.perf_counter()
    rows, cols = layout.slices(i, j)
    if log := os.environ.get(TILE_LOG):
        with open(log, "a") as file:
            file.write(f"{i} {j}\n")
    try:
        blocks = source(rows, cols)
        for name in layout.names:
            _array(path, name, layout)[rows, cols] = blocks[name]
    except Exception as error:  # reported with the tile's indices; the other tiles go on
        return TileOutcome(i, j, time.perf_counter() - start, f"{type(error).__name__}: {error}")
    _array(path, DONE, layout)[i, j] = 1
    return TileOutcome(i, j, time.perf_counter() - start)


def _inline(source, path, layout, todo) -> Iterator[TileOutcome]:
    for i, j in todo:
        yield run_tile(source, path, layout, i, j)


def _distributed(client, source, path, layout, todo) -> Iterator[TileOutcome]:
    from dask.distributed import as_completed

    shared = client.scatter(source, broadcast=True, hash=False)
    futures = {
        client.submit(run_tile, shared, path, layout, i, j, pure=False): (i, j) for i, j in todo
    }
    for future in as_completed(futures):
        try:
            yield future.result()
        except Exception as error:  # the worker was lost more often than Dask retries
            lost = f"worker lost: {type(error).__name__}: {error}"
            yield TileOutcome(*futures[future], 0.0, lost)


def run_job(
    source: TileSource,
    path: str | Path,
    layout: Layout,
    identity: Mapping[str, str],
    *,
    client: Any | None = None,
    progress: Progress | None = None,
) -> JobReport:
    """Compute every tile of the job that the store at ``path`` does not hold yet.

    Args:
        source: computes a tile's blocks (`TileSource`).
        path: the zarr store, created if missing (its parent must exist).
        layout: arrays, shape, tiles and dtype.
        identity: strings saying what the arrays are computed from; a store made with
            another identity or layout is refused.
        client: a ``dask.distributed.Client`` to run the tiles on; None: inline.
        progress: counts the tiles as they finish.

    Returns:
        The job's `JobReport`; failed tiles carry their indices and error.

    Raises:
        TilesInterrupted: on Ctrl-C, with the tiles stored so far.
    """
    layout = prepare(path, layout, identity)
    finished = done_tiles(path)
    todo = [t for t in layout.tiles() if t not in finished]
    if progress is not None:
        progress.resize(len(todo))
    outcomes = (
        _inline(source, str(path), layout, todo)
        if client is None
        else _distributed(client, source, str(path), layout, todo)
    )
    failed = []
    try:
        for outcome in outcomes:
            if outcome.error is not None:
                failed.append(outcome)
            if progress is not None:
                progress.advance(outcome.error is None)
    except KeyboardInterrupt:
        raise TilesInterrupted(len(done_tiles(path)), len(layout.tiles())) from None
    return JobReport(len(layout.tiles()), len(finished), len(todo) - len(failed), tuple(failed))


def lazy(path: str | Path, name: str) -> Any:
    """Array ``name`` of a store as a ``dask.array`` (chunk = tile), symmetric ones mirrored.

    The tile (j, i) of a symmetric job below the diagonal is tile (i, j) transposed, with
    its trailing axes (if two) swapped too: A[j, i, b, a] = A[i, j, a, b].
    """
    import dask.array as da

    layout = Layout.from_json(read_job(path)["layout"])
    if name not in layout.names:
        raise ValueError(f"name: the store holds {list(layout.names)}, not {name!r}")
    a = da.from_zarr(str(Path(path) / name))
    if not layout.symmetric:
        return a
    swap = (1, 0, *reversed(range(2, a.ndim)))
    rows, cols = layout.grid
    blocks = [
        [a.blocks[i, j] if j >= i else a.blocks[j, i].transpose(swap) for j in range(cols)]
        for i in range(rows)
    ]
    return da.concatenate([da.concatenate(row, axis=1) for row in blocks], axis=0)
