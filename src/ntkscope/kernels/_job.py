"""Kernels as tiled array jobs: the tile sources that `ntkscope.kernel_store` runs.

A kernel is computed tile by tile by the generic job of `ntkscope.runner.tiled`
(zarr chunk = tile); this module says what a tile is:

- ``entk``: the empirical NTK ``Θ̂(x, x') = J(x) J(x')ᵀ`` of any model `empirical_ntk`
  takes, in any mode and by any method: array ``kernel``, (N1, N2) for "trace" and
  (N1, N2, O, O) for "full", in the dtype of the model's parameters.
- ``infinite`` and ``infinite_cnn``: the NNGP and NTK of `infinite_kernels` and
  `infinite_cnn_kernels` (keyword arguments as there): arrays ``nngp`` and ``ntk``, float64.

The tiles are those the in-memory function uses for the same memory budget, and each is
computed by the same operations, so a store holds exactly the in-memory kernel (the tests
compare bytes). A worker needs about the memory budget, the model, the inputs and one
tile. With x2 = None only tiles on and above the diagonal are computed.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch import nn

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope._checks import choice
from ntkscope.kernels import infinite, infinite_cnn
from ntkscope.kernels._infinite_tiles import diagonal_tile, tile_entries, tile_shape
from ntkscope.kernels._tiling import cost, plan_tiles
from ntkscope.kernels.empirical import Method, Mode, _all_finite, _plan


class Kind(StrEnum):
    """What a kernel job computes.

    ENTK: the empirical NTK of ``model`` (array ``kernel``).
    INFINITE: NNGP and NTK of the infinitely wide MLP, `infinite_kernels`.
    INFINITE_CNN: NNGP and NTK of the infinitely wide CNN, `infinite_cnn_kernels`.
    """

    ENTK = "entk"
    INFINITE = "infinite"
    INFINITE_CNN = "infinite_cnn"


_FUNCTIONS = {
    Kind.INFINITE: (infinite.infinite_kernels, infinite.plan),
    Kind.INFINITE_CNN: (infinite_cnn.infinite_cnn_kernels, infinite_cnn.plan),
}


def _plan_infinite(kind: Kind, x1, x2, args: dict[str, Any]) -> tuple:
    """(recursion, x1, x2, budget) for the public function's arguments, defaults filled in."""
    public, plan = _FUNCTIONS[kind]
    try:
        bound = inspect.signature(public).bind(x1, x2, **args)
    except TypeError as error:
        raise TypeError(f"kernel_args: {error} (of {public.__name__})") from None
    bound.apply_defaults()
    return plan(**bound.arguments)


def digest(*tensors: torch.Tensor | None) -> str:
    """SHA-256 of the dtypes, shapes and values of ``tensors`` (None counts as absent)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_hash(model: nn.Module) -> str:
    """SHA-256 of the module tree (names and types), which parameters train, and every value."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__qualname__};".encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{p.requires_grad};".encode())
    h.update(digest(*model.state_dict().values()).encode())
    return h.hexdigest()[:16]


ModelLike = nn.Module | Callable[[], nn.Module]
"""A module, or a picklable function building it (run once on each worker)."""


def _build(model: ModelLike) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if not callable(model):
        raise TypeError(f"model: expected an nn.Module or a function returning one, got {model!r}")
    built = model()
    if not isinstance(built, nn.Module):
        raise TypeError(f"model: the function returned {type(built).__name__}, not an nn.Module")
    return built


@dataclass
class _EntkTiles:
    """eNTK tiles; the model and the method's plan are built once per worker."""

    model: ModelLike
    x1: torch.Tensor
    x2: torch.Tensor | None
    mode: Mode
    method: Method
    budget: int
    model_hash: str
    _plan: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_plan": None}

    def plan(self) -> Any:
        if self._plan is None:
            model = _build(self.model)
            if model_hash(model) != self.model_hash:
                raise ValueError("model: built differently on this worker (seed the factory)")
            args = (self.x1, self.x2, self.mode, False, self.method, self.budget, None, None)
            self._plan = _plan(model, *args)
        return self._plan

    def __call__(self, rows: slice, cols: slice) -> dict[str, np.ndarray]:
        with torch.inference_mode(False), torch.enable_grad():
            p = self.plan()
            features = p.strategy.features
            fa = features(_batch.take(p.x1, rows))
            if p.x2 is None and rows == cols:
                tile = p.strategy.symmetric(fa)
            else:
                tile = p.strategy.pair(fa, features(_batch.take(_second(p), cols)))
        if not p.full:
            tile = tile / p.n_out
        if not _all_finite(tile):
            raise ValueError("x1: the eNTK tile has NaN or infinite entries")
        return {"kernel": tile.detach().cpu().numpy()}


def _second(p: Any) -> Batch:
    return p.x1 if p.x2 is None else p.x2


@dataclass
class _InfiniteTiles:
    """NNGP and NTK tiles; the per-input variances are computed once per worker."""

    kind: Kind
    x1: torch.Tensor
    x2: torch.Tensor | None
    args: dict[str, Any]
    _state: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_state": None}

    def state(self) -> tuple:
        if self._state is None:
            rec, x1, x2, budget = _plan_infinite(self.kind, self.x1, self.x2, self.args)
            v1, diagonal = rec.single(x1, budget)
            v2 = v1 if x2 is None else rec.single(x2, budget)[0]
            self._state = rec, x1, x1 if x2 is None else x2, v1, v2, diagonal
        return self._state

    def __call__(self, rows: slice, cols: slice) -> dict[str, np.ndarray]:
        rec, x1, x2, v1, v2, diagonal = self.state()
        tile = rec.tile(x1[rows], x2[cols], [v[rows] for v in v1], [v[cols] for v in v2])
        if self.x2 is None and rows == cols:
            tile = [diagonal_tile(b, d[rows]) for b, d in zip(tile, diagonal, strict=True)]
        return {"nngp": tile[0].cpu().numpy(), "ntk": tile[1].cpu().numpy()}


@dataclass(frozen=True)
class KernelJob:
    """A kernel as a tiled array job: the tile source, the arrays' layout, the identity.

    Fields as `ntkscope.runner.tiled.Layout` takes them; ``identity``: what the arrays
    are computed from (kind, mode, method, dtype, model and data hashes, arguments).
    """

    source: Callable[[slice, slice], dict[str, np.ndarray]]
    names: tuple[str, ...]
    shape: tuple[int, int]
    tile: tuple[int, int]
    dtype: str
    trailing: tuple[int, ...]
    symmetric: bool
    identity: dict[str, str]


def _entk_job(model, x1, x2, mode, method, memory_budget) -> KernelJob:
    if model is None:
        raise ValueError("model: kind='entk' needs a model (an nn.Module or a function)")
    module = _build(model)
    with torch.inference_mode(False), torch.enable_grad():
        p = _plan(module, x1, x2, mode, False, method, memory_budget, None, None)
    n1, n2 = _batch.size(p.x1), _batch.size(_second(p))
    block = plan_tiles(n1, n2, cost(p.strategy), p.budget, p.x2 is None).chunk
    mode = choice(Mode, mode, "mode")
    h = model_hash(module)
    return KernelJob(
        source=_EntkTiles(model, p.x1, p.x2, mode, p.method, p.budget, h),
        names=("kernel",),
        shape=(n1, n2),
        tile=(block, block),
        dtype=str(p.fm.dtype).removeprefix("torch."),
        trailing=(p.n_out, p.n_out) if p.full else (),
        symmetric=p.x2 is None,
        identity={"mode": mode.value, "method": p.method.value, "model_hash": h},
    )


def _infinite_job(kind, x1, x2, memory_budget, args) -> KernelJob:
    if "diagonal" in args:
        raise ValueError("kernel_args: diagonal is not a kernel job (use the function itself)")
    rec, x1, x2, budget = _plan_infinite(kind, x1, x2, {**args, "memory_budget": memory_budget})
    one = rec.entry_bytes() + rec.tile_bytes()
    if budget < one:
        raise ValueError(
            f"memory_budget: {budget} bytes is too small; one pair of examples needs {one} bytes"
        )
    n1, n2 = len(x1), len(x1 if x2 is None else x2)
    entries = tile_entries(budget, x1.device, rec.entry_bytes(), rec.tile_bytes())
    return KernelJob(
        source=_InfiniteTiles(kind, x1, x2, {**args, "memory_budget": budget}),
        names=("nngp", "ntk"),
        shape=(n1, n2),
        tile=tile_shape(n1, n2, entries),
        dtype="float64",
        trailing=(),
        symmetric=x2 is None,
        identity={"arguments": repr(sorted(args.items()))},
    )


def kernel_job(
    kind: str | Kind,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    model: ModelLike | None,
    mode: str | Mode,
    method: str | Method,
    memory_budget: int | float | str | None,
    kernel_args: dict[str, Any],
) -> KernelJob:
    """The checked job of `ntkscope.kernel_store.compute` (arguments as there)."""
    kind = choice(Kind, kind, "kind")
    if kind is Kind.ENTK:
        if kernel_args:
            raise TypeError(f"kernel_args: kind='entk' takes none, got {sorted(kernel_args)}")
        job = _entk_job(model, x1, x2, mode, method, memory_budget)
    else:
        if model is not None:
            raise ValueError(f"model: kind={kind.value!r} takes no model")
        job = _infinite_job(kind, x1, x2, memory_budget, kernel_args)
    identity = {"kind": kind.value, "dtype": job.dtype, "data_hash": digest(x1, x2)}
    return replace(job, identity=identity | job.identity)
