"""The object that flows through an infinite-width kernel program, and the run's context.

A `Kernel` holds the NNGP Σ and the NTK Θ of one intermediate tensor of a network for a
batch of input pairs (x, x'), in the limit where its width axis (features of a dense layer,
channels of a convolution) is infinitely wide. The other axes of the tensor are positions
(a sequence, the pixels of an image): Σ and Θ have shape (*batch, *positions, *positions),
position p of x against position p' of x'. Batch is (N,) when every input is paired with
itself (a "single" run) and (N1, N2) for a tile of pairs.

Besides the kernels it carries what the next operations need to stay exact: the layout of
the tensor (which axis is the width, whether channels and positions were flattened
together), whether its features are zero-mean (the duals assume zero-mean Gaussians), and
which weight layers it descends from (to decide whether a sum of two branches has a
cross-covariance; see `ntkscope.kernels._program_ops.add`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

Pair = tuple[torch.Tensor, torch.Tensor]


class ProgramError(ValueError):
    """A network, or a use of a network, that the kernel program cannot describe exactly."""


@dataclass(frozen=True)
class Term:
    """One summand of a tensor, for the independence of branches.

    kind: "layer" (the output of a weight layer with fresh zero-mean weights, ``name`` its
    node), "input" (the network input, deterministic), or "nonlinear" (an activation or a
    norm, ``name`` its node).
    """

    kind: str
    name: str


@dataclass(frozen=True)
class Kernel:
    """Σ and Θ of one tensor of the network for a batch of input pairs.

    Attributes:
        nngp, ntk: float64 (*batch, *positions, *positions).
        batch: number of leading batch axes (1: inputs paired with themselves; 2: a tile).
        ndim: axes of the tensor per example (without the batch axis of the network).
        channel: index of the width axis among those ``ndim`` axes.
        flat: the width axis is channels × positions flattened together (positions are
            still kept in ``nngp``: features at different positions never mix).
        zero_mean: every feature has mean zero over initializations.
        terms: the summands (see `Term`).
        ancestors: names of every weight layer this tensor depends on.
        mixed: a concatenation whose feature groups have different kernels: ``nngp`` and
            ``ntk`` hold their fan-in-weighted mean (`ntkscope.kernels._program_concat`).
    """

    nngp: torch.Tensor
    ntk: torch.Tensor
    batch: int
    ndim: int
    channel: int
    flat: bool = False
    zero_mean: bool = True
    terms: frozenset[Term] = field(default_factory=frozenset)
    ancestors: frozenset[str] = field(default_factory=frozenset)
    mixed: bool = False

    @property
    def positions(self) -> int:
        """Number of position axes of x (as many again for x')."""
        return (self.nngp.dim() - self.batch) // 2

    def position_shape(self) -> tuple[int, ...]:
        """Sizes of the position axes."""
        return tuple(self.nngp.shape[self.batch : self.batch + self.positions])

    def axes(self, position: int) -> tuple[int, int]:
        """The axes of ``nngp`` of position axis ``position`` for x and for x'."""
        first = self.batch + position
        return first, first + self.positions

    def position_of(self, axis: int) -> int:
        """The position index of per-example axis ``axis`` (not the width axis)."""
        return axis if axis < self.channel else axis - 1

    def with_kernels(self, nngp: torch.Tensor, ntk: torch.Tensor, **changes: object) -> Kernel:
        """A copy with new kernels (and other fields changed)."""
        return replace(self, nngp=nngp, ntk=ntk, **changes)

    def variances(self) -> torch.Tensor:
        """Σ(x, x)[p, p] of a single run: (N, *positions)."""
        if self.batch != 1:
            raise AssertionError("variances are read from a run of inputs paired with themselves")
        shape = self.position_shape()
        n = int(torch.tensor(shape).prod()) if shape else 1
        pairs = self.nngp.reshape(-1, n, n)
        return pairs.diagonal(dim1=-2, dim2=-1).reshape(-1, *shape)

    def spread(self, v1: torch.Tensor, v2: torch.Tensor) -> Pair:
        """Per-position variances (*b, *positions) of x and x' broadcast against ``nngp``."""
        ones = (1,) * self.positions
        v1 = v1.reshape(*v1.shape, *ones)
        v2 = v2.reshape(
            *v2.shape[: v2.dim() - self.positions], *ones, *v2.shape[v2.dim() - self.positions :]
        )
        return v1, v2


class Context:
    """Supplies the per-position variances of x and of x' at each nonlinear step.

    A single run (every input with itself) reads them off the kernel's diagonal and
    records them; a tile run is given the records of its rows and columns and replays them
    in the same order, so each entry of a tile uses exactly its inputs' own variances.
    """

    def __init__(
        self, rows: list[torch.Tensor] | None = None, cols: list[torch.Tensor] | None = None
    ):
        self.single = rows is None
        self.records: list[torch.Tensor] = [] if rows is None else rows
        self.cols = cols
        self.step = 0
        self.largest_pairs = 1  # largest number of position pairs per entry met

    def variances(self, kernel: Kernel) -> Pair:
        """(v1, v2) spread against ``kernel.nngp``."""
        pairs = kernel.nngp[(0,) * kernel.batch].numel()
        self.largest_pairs = max(self.largest_pairs, pairs)
        if self.single:
            v = kernel.variances()
            self.records.append(v)
            return kernel.spread(v, v)
        v1, v2 = self.records[self.step], self.cols[self.step]
        self.step += 1
        return kernel.spread(v1[:, None], v2[None])
