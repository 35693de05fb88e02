"""The object that flows through an infinite-width kernel program, and the run's context.

A `Kernel` holds the NNGP Σ and the NTK Θ of one intermediate tensor of a network for a
batch of input pairs (x, x'), in the limit where its width axis (features of a dense layer,
channels of a convolution) is infinitely wide. The other axes of the tensor are positions
(a sequence, the pixels of an image): Σ and Θ have shape (*batch, *positions, *positions),
position p of x against position p' of x'. Batch is (N,) when every input is paired with
itself (a "single" run) and (N1, N2) for a tile of pairs.

Besides the kernels it carries what the next operations need to stay exact: the layout of
the tensor (which axis is the width, whether channels and positions were flattened
together) and the limit μ(x) of the mean over the width axis of its features, per input
and position (a LayerNorm subtracts it; a sum of independent branches has the cross term
μ_a(x) μ_b(x')). Which features are zero-mean Gaussian and which branches are independent
is a property of the graph, checked once when the program is built
(`ntkscope.kernels._program_lineage`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

Pair = tuple[torch.Tensor, torch.Tensor]


class ProgramError(ValueError):
    """A network, or a use of a network, that the kernel program cannot describe exactly."""


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
        mean: None when the features have mean zero; else (μ(x), μ(x')), float64 of shapes
            (B1, *positions) and (B2, *positions): the rows' and the columns' means (B1 = B2
            = N in a single run, the same tensor twice).
    """

    nngp: torch.Tensor
    ntk: torch.Tensor
    batch: int
    ndim: int
    channel: int
    flat: bool = False
    mean: Pair | None = None

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

    def sides(self, v1: torch.Tensor, v2: torch.Tensor) -> Pair:
        """Per-input values of the rows (B1, *positions) and of the columns (B2, *positions)
        broadcast against ``nngp``."""
        return self.spread(v1, v2) if self.batch == 1 else self.spread(v1[:, None], v2[None])

    def means(self) -> Pair:
        """(μ(x), μ(x')) broadcast against ``nngp`` (zeros when the mean is zero)."""
        if self.mean is None:
            zero = self.nngp.new_zeros(())
            return zero, zero
        return self.sides(*self.mean)

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

    def per_input(self, kernel: Kernel) -> Pair:
        """(q(x), q(x')) of the rows (B1, *positions) and the columns (B2, *positions)."""
        pairs = kernel.nngp[(0,) * kernel.batch].numel()
        self.largest_pairs = max(self.largest_pairs, pairs)
        if self.single:
            v = kernel.variances()
            self.records.append(v)
            return v, v
        v1, v2 = self.records[self.step], self.cols[self.step]
        self.step += 1
        return v1, v2

    def variances(self, kernel: Kernel) -> Pair:
        """(v1, v2) spread against ``kernel.nngp``."""
        return kernel.sides(*self.per_input(kernel))
