"""Concatenation along the width axis (``torch.cat``) in an infinite-width kernel program.

Concatenating tensors h_1, .., h_G with n_1, .., n_G features along the width axis gives a
tensor whose features fall into groups with different per-feature kernels K_g, T_g. A weight
layer reads its input only through the mean over its fan-in n = Σ n_g (`_program_ops`:
Σ = a² v_w n · mean_i K_i + ..., with fresh independent weights per input feature, so
even copies of one tensor, cat([h, h]), enter only through that mean), and so do pooling,
flatten, scalar multiples, sums of independent branches and norms (whose normalizer is the
mean over features of h_i²). The concatenation is therefore carried as the fan-in-weighted
mean

    K = Σ_g (n_g / n) K_g,        T = Σ_g (n_g / n) T_g,        μ = Σ_g (n_g / n) μ_g;

an elementwise activation, whose dual needs each feature's own Gaussian law, refuses it, and
so does the program's output (the output covariance would not be a scalar kernel times the
identity): both checked when the program is built (`ntkscope.kernels._program_lineage`).

Limit assumed: every group's width grows with the fractions n_g / n fixed at those of the
model (in standard parameterization the weight layer's σ_w² / n is read from the model's
actual fan-in, as for any layer). The group widths are read from one forward pass of the
model on one example (torch.fx shape propagation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.fx as fx

from ntkscope.kernels._program_kernel import Context, Kernel, ProgramError

CATS = (torch.cat, torch.concat, torch.concatenate, "cat")
"""The fx targets of a concatenation."""


def concatenate(kernels: Sequence[Kernel], widths: Sequence[int], name: str) -> Kernel:
    """The fan-in-weighted mean of the groups' kernels and means (module docstring)."""
    first = kernels[0]
    layout = (first.ndim, first.channel, first.flat, first.position_shape())
    for k in kernels[1:]:
        if (k.ndim, k.channel, k.flat, k.position_shape()) != layout:
            raise ProgramError(f"{name}: concatenates tensors of different shapes or layouts")
    if first.flat:
        raise ProgramError(f"{name}: a concatenation of flattened channels is not supported")
    total = sum(widths)
    nngp = sum(k.nngp * (n / total) for k, n in zip(kernels, widths, strict=True))
    ntk = sum(k.ntk * (n / total) for k, n in zip(kernels, widths, strict=True))
    mean = None
    if any(k.mean is not None for k in kernels):
        mean = tuple(
            sum(k.mean[side] * (n / total) for k, n in zip(kernels, widths, strict=True) if k.mean)
            for side in (0, 1)
        )
    return first.with_kernels(nngp, ntk, mean=mean)


def concat_parts(node: fx.Node) -> tuple[str, Callable[[list[Kernel], Context], Kernel]]:
    """(program text, kernel function) of a ``torch.cat`` node; the widths are read at run
    time from the shapes that shape propagation stored on the input nodes."""
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) for p in parts):
        raise ProgramError(f"{node.name}: expected torch.cat of a list of tensors")
    unique = node.all_input_nodes
    name = node.name

    def apply(k: list[Kernel], ctx: Context) -> Kernel:
        kernel = k[0]
        if dim % (kernel.ndim + 1) - 1 != kernel.channel:
            raise ProgramError(
                f"{name}: concatenates along axis {dim}, not the width axis "
                f"{kernel.channel + 1}: only a concatenation of features has a kernel here"
            )
        shapes = [p.meta.get("shape") for p in parts]
        if any(s is None for s in shapes):
            raise AssertionError("shape propagation must run before a concatenation")
        kernels = [k[unique.index(p)] for p in parts]
        return concatenate(kernels, [s[dim] for s in shapes], name)

    text = f"{name}: concatenation of features  K = Σ_g (n_g/n) K_g, T likewise"
    return text, apply


def propagate_shapes(graph: fx.GraphModule, x: torch.Tensor) -> None:
    """Store every tensor node's output shape (``node.meta["shape"]``) by running ``graph``
    on x[:1] in the dtype of its parameters."""
    parameter = next(graph.parameters(), None)
    dtype = torch.float32 if parameter is None else parameter.dtype
    try:
        with torch.no_grad():
            _Shapes(graph).run(x[:1].to(dtype))
    except Exception as err:  # the model's own error, on one example
        first = str(err).split("\n")[0]  # without fx's notes on the failing node
        raise ProgramError(f"model: fails on one example {tuple(x[:1].shape)}: {first}") from err


class _Shapes(fx.Interpreter):
    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if torch.is_tensor(result):
            n.meta["shape"] = tuple(result.shape)
        return result
