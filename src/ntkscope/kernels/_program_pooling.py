"""Pooling and means over position axes as kernel-program steps: Σ = A K Aᵀ, Θ = A T Aᵀ.

``nn.AvgPool1d/2d``, ``nn.AdaptiveAvgPool1d/2d``, their functional forms and ``mean`` over
position axes; each is a linear map A of every position axis (`_program_ops.positional`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx as fx
from torch.nn import functional as F

from ntkscope.kernels import _program_ops as ops
from ntkscope.kernels._program_kernel import Context, Kernel, ProgramError
from ntkscope.kernels._program_step import SUGGESTION, Step, label, pair


def _pool_matrices(kernel: Kernel, matrix: Callable[[int, int], torch.Tensor]) -> Kernel:
    shape = kernel.position_shape()
    return ops.positional(kernel, [matrix(i, n) for i, n in enumerate(shape)])


def avg_pool_step(node: fx.Node, dims: int, size, stride, padding, ceil, include) -> Step:
    size = pair(size, dims)
    stride = pair(stride if stride else size, dims)
    padding = pair(padding, dims)
    if ceil or (not include and any(padding)):
        raise ProgramError(
            f"{label(node)}: average pooling with ceil_mode or count_include_pad=False and "
            f"padding is not supported; {SUGGESTION}"
        )
    windows = [ops.Window(k, s, 1, (p, p)) for k, s, p in zip(size, stride, padding, strict=True)]
    return Step(
        node,
        f"{label(node)}: average pooling {size} stride {stride}  Σ = A K Aᵀ",
        lambda k, ctx: _pool_matrices(k[0], lambda i, n: ops.average_matrix(n, windows[i])),
    )


def adaptive_step(node: fx.Node, dims: int, output_size) -> Step:
    out = pair(output_size, dims)
    return Step(
        node,
        f"{label(node)}: adaptive average pooling to {out}  Σ = A K Aᵀ",
        lambda k, ctx: _pool_matrices(
            k[0], lambda i, n: ops.adaptive_matrix(n, n if out[i] is None else out[i])
        ),
    )


def mean_step(node: fx.Node, dims, keepdim: bool) -> Step:
    dims = pair(dims, 1)

    def apply(k: list[Kernel], ctx: Context) -> Kernel:
        kernel = k[0]
        axes = sorted({d % (kernel.ndim + 1) - 1 for d in dims})
        if -1 in axes or kernel.channel in axes or kernel.flat:
            raise ProgramError(
                f"{node.name}: a mean over the batch or the width axis has no infinite-width "
                f"limit here (only over positions); {SUGGESTION}"
            )
        positions = [kernel.position_of(a) for a in axes]
        shape = kernel.position_shape()
        matrices = [
            torch.full((1, n), 1.0 / n, dtype=torch.float64) if i in positions else None
            for i, n in enumerate(shape)
        ]
        kernel = ops.positional(kernel, matrices)
        return kernel if keepdim else ops.drop_positions(kernel, positions)

    return Step(node, f"{label(node)}: mean over axes {dims}  Σ = A K Aᵀ", apply)


_AVG_POOLS = {F.avg_pool1d: 1, F.avg_pool2d: 2}
_ADAPTIVE_POOLS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2}


def _argument(node: fx.Node, index: int, name: str, default: object) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def functional_pooling(node: fx.Node) -> Step | None:
    """F.avg_pool1d/2d and F.adaptive_avg_pool1d/2d as their modules, else None."""
    if node.target in _ADAPTIVE_POOLS:
        return adaptive_step(
            node, _ADAPTIVE_POOLS[node.target], _argument(node, 1, "output_size", None)
        )
    if node.target not in _AVG_POOLS:
        return None
    size = _argument(node, 1, "kernel_size", None)
    return avg_pool_step(
        node,
        _AVG_POOLS[node.target],
        size,
        _argument(node, 2, "stride", None),
        _argument(node, 3, "padding", 0),
        _argument(node, 4, "ceil_mode", False),
        _argument(node, 5, "count_include_pad", True),
    )
