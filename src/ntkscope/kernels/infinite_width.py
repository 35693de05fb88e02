"""`infinite_width`: the NNGP and NTK of any supported PyTorch module at infinite width.

The module's computation is captured once with torch.fx (why not torch.export: see
`ntkscope.kernels._program_capture`) and translated into a program of small `Kernel ->
Kernel` functions, one per operation (`ntkscope.kernels._program_ops`, which states each
formula and its source), in the style of neural-tangents' ``stax`` layers acting on a frozen
``Kernel``. The limit is the one in which every width axis (features of a dense layer,
channels of a convolution) goes to infinity with each layer's initialization variances as
they are in the model: ntkscope's `Dense` and `Conv` carry their parameterization and σ's;
plain torch layers are read as standard parameterization with σ_w² = fan_in · mean(W²) and
σ_b² = mean(b²) of their actual parameters, and their NTK is the leading order of E[Θ̂] at the
model's actual fan-ins (docs/conventions.md, standard parameterization).

The program runs like `infinite_kernels`: once on every input paired with itself (which
records each input's per-position variances at every activation and norm), then on tiles
of input pairs within the memory budget (`ntkscope.kernels._infinite_tiles`).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ntkscope._checks import finite_batch, memory_bytes
from ntkscope.kernels import _program_lineage as lineage
from ntkscope.kernels._infinite_tiles import (
    check_second_inputs,
    pairwise_kernels,
    tile_entries,
    written,
)
from ntkscope.kernels._program_capture import input_kernel, steps, trace
from ntkscope.kernels._program_concat import CATS, propagate_shapes
from ntkscope.kernels._program_kernel import Context, Kernel, Pair, ProgramError
from ntkscope.kernels._program_step import Raw, Step
from ntkscope.kernels._tiling import resolve_budget

__all__ = ["KernelFn", "ProgramError", "infinite_width"]


def _raw(node: fx.Node, env: dict, modules: dict[str, nn.Module]) -> Raw:
    """Run ``node`` as the network would, on x (and on x' for a pair)."""

    def side(which: int) -> object:
        def value(n: fx.Node) -> object:
            return env[n].x1 if which == 1 else env[n].x2

        args, kwargs = fx.node.map_arg(node.args, value), fx.node.map_arg(node.kwargs, value)
        if node.op == "call_module":
            return modules[node.target](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    first = next(iter(env.values()))
    return Raw(side(1), None if first.x2 is None else side(2))


def _last_reads(input_node: fx.Node, steps: list[Step], output: fx.Node) -> list[list[fx.Node]]:
    """For each step, the values that no later step reads, dropped after it (the input and
    the output excepted): the memory of a tile's kernels is then reused, still in cache,
    by the next steps (keeping every step's tiles ran the program 1.4× slower: CPU time,
    residual LayerNorm MLP of benchmarks/infinite.py)."""
    last = {n: i for i, s in enumerate(steps) for n in (*s.node.all_input_nodes, *s.extra)}
    done: list[list[fx.Node]] = [[] for _ in steps]
    for node, i in last.items():
        if node not in (input_node, output):
            done[i].append(node)
    return done


class KernelFn:
    """``kernel_fn(x1, x2=None, *, diagonal=False) -> (nngp, ntk)`` of one network.

    Attributes:
        layers: the kernel program, one line per operation (K, T: the NNGP and NTK of the
            operation's input; q = K(x, x)).
    """

    def __init__(self, graph: fx.GraphModule, memory_budget: int | str | None) -> None:
        self._input, self._steps, self._output = steps(graph)
        lineage.check(self._input, self._steps, self._output)
        self._done = _last_reads(self._input, self._steps, self._output)
        self._graph = graph
        self._shaped = not any(s.node.target in CATS for s in self._steps)
        self._modules = dict(graph.named_modules())
        self._budget = (
            None if memory_budget is None else memory_bytes(memory_budget, "memory_budget")
        )
        self._pairs = 1
        self._probed: dict[torch.Size, int] = {}  # position pairs by the examples' shape
        self._taken: set[torch.Size] = set()  # examples' shapes the model was run on
        self._arrays = max([16, *(s.arrays for s in self._steps)])
        self.layers: tuple[str, ...] = (
            f"{self._input.name}: input  K = mean_c x_c·x'_c, T = 0",
            *(s.text for s in self._steps if s.text),
        )

    def __repr__(self) -> str:
        return "KernelFn(\n  " + "\n  ".join(self.layers) + "\n)"

    def run(self, raw: Raw, ctx: Context) -> Kernel:
        """The output kernel of the program for the raw inputs ``raw``."""
        env: dict[fx.Node, Raw | Kernel] = {self._input: raw}
        for step, done in zip(self._steps, self._done, strict=True):
            args = [env[n] for n in (*step.node.all_input_nodes, *step.extra)]
            env[step.node] = self._step(step, args, env, ctx)
            for node in done:
                del env[node]
        out = env[self._output]
        if out.positions:
            raise ProgramError(
                f"model: its output has position axes {out.position_shape()}; expected "
                "outputs (N, O) (add a pooling or a flatten and a dense readout)"
            )
        return out

    def _step(self, step: Step, args: list, env: dict, ctx: Context) -> Raw | Kernel:
        kernels = [a for a in args if isinstance(a, Kernel)]
        if not kernels:
            if step.kind != "layer":
                return _raw(step.node, env, self._modules)
            return step.apply([input_kernel(args[0], step.channel)], ctx)
        channel = kernels[0].channel
        given = [
            a if isinstance(a, Kernel) else input_kernel(a, channel)
            for a in args
            if isinstance(a, Kernel) or torch.is_tensor(a.x1)
        ]
        return step.apply(given, ctx)

    def _check_takes(self, x: torch.Tensor, argument: str) -> None:
        """Run the model once on ``x[:1]`` (once per shape of the examples), refusing
        inputs it cannot take (wrong features, channels or image size) naming ``argument``:
        the kernel program alone would return kernels for them."""
        if x.shape[1:] in self._taken or len(x) == 0:
            return
        weights = next(self._graph.parameters(), None)
        dtype = torch.float64 if weights is None else weights.dtype
        device = x.device if weights is None else weights.device
        try:
            with torch.no_grad():
                self._graph(x[:1].to(device=device, dtype=dtype))
        except Exception as error:  # the model's own shape checks
            raise ValueError(
                f"{argument}: the model fails on one example of shape {tuple(x.shape[1:])}: "
                f"{type(error).__name__}: {error}"
            ) from error
        self._taken.add(x.shape[1:])

    # The Recursion protocol of `ntkscope.kernels._infinite_tiles`.

    def single(self, x: torch.Tensor, budget: int) -> tuple[list[torch.Tensor], Pair]:
        """Per-step variances of every input and the kernels of the pairs (x, x)."""
        self._pairs = self.position_pairs(x)
        batch = tile_entries(budget, x.device, self.entry_bytes())
        records: list[list[torch.Tensor]] = []
        outputs = []
        for i in range(0, len(x), batch):
            ctx = Context()
            out = self.run(Raw(x[i : i + batch], None), ctx)
            records.append(ctx.records)
            outputs.append((out.nngp, out.ntk))
        variances = [torch.cat(parts) for parts in zip(*records, strict=True)]
        nngp, ntk = (torch.cat(parts) for parts in zip(*outputs, strict=True))
        return variances, (nngp, ntk)

    def tile(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        v1: list[torch.Tensor],
        v2: list[torch.Tensor],
        out: Pair | None = None,
    ) -> Pair:
        """(NNGP, NTK) of shape (N1, N2) for rows x1, columns x2 with variances v1, v2,
        copied into ``out`` when given (`_infinite_tiles.Recursion.tile`)."""
        kernels = self.run(Raw(x1, x2), Context(v1, v2))
        return written((kernels.nngp, kernels.ntk), out)

    def position_pairs(self, x: torch.Tensor) -> int:
        """The largest number of position pairs per input pair (cost per kernel entry), from
        one run on ``x[:1]``, once per shape of the examples."""
        x = finite_batch(x, "x")[:1].detach()
        if x.shape[1:] not in self._probed:
            if not self._shaped:  # group widths of the concatenations
                propagate_shapes(self._graph, x)
                self._shaped = True
            probe = Context()
            self.run(Raw(x.to(torch.float64), None), probe)
            self._probed[x.shape[1:]] = probe.largest_pairs
        return self._probed[x.shape[1:]]

    def entry_bytes(self) -> int:
        """Working memory per pair of inputs: position pairs × the dual's arrays."""
        return self._pairs * 8 * self._arrays

    def tile_bytes(self) -> int:
        """Working memory of a tile besides ``entry_bytes`` per entry: none."""
        return 0

    def __call__(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor | None = None,
        *,
        diagonal: bool = False,
        memory_budget: int | str | None = None,
    ) -> Pair:
        """(nngp, ntk): float64 (N1, N2), (N1, N1) for x2 = None, or (N1,) when ``diagonal``.

        Args:
            x1: inputs (N1, ...) as the model takes them, any float dtype; computed in
                float64 on x1's device.
            x2: inputs (N2, ...) of the same per-example shape, or None for x2 = x1 (then
                the result is exactly symmetric).
            diagonal: only the kernels of the pairs (x, x) of x1.
            memory_budget: working memory of the tiles (bytes or "2GB"); default the one
                given to `infinite_width`, else a quarter of the device's free memory.

        Raises:
            ValueError: naming ``x1`` when the model itself fails on one of its examples
                (wrong features, channels or image size), which the kernel program alone
                would not notice.
        """
        x1 = finite_batch(x1, "x1").detach().to(torch.float64)
        x2 = None if x2 is None else finite_batch(x2, "x2").detach().to(torch.float64)
        check_second_inputs(x1, x2, diagonal)
        self._check_takes(x1, "x1")
        budget = resolve_budget(self._budget if memory_budget is None else memory_budget, x1.device)
        return pairwise_kernels(self, x1, x2, diagonal=diagonal, budget=budget)


def infinite_width(model: nn.Module, *, memory_budget: int | str | None = None) -> KernelFn:
    """The infinite-width NNGP and NTK of ``model``'s architecture, as a kernel function.

    ``kernel_fn = ns.infinite_width(model)``; ``nngp, ntk = kernel_fn(x1, x2)`` with the
    same shapes, tiling and float64 results as `ntkscope.infinite_kernels`, which it equals
    for an ntkscope MLP (and `infinite_cnn_kernels` for an ntkscope CNN). Both are scalar
    kernels: the output covariance is the kernel times I_O.

    Supported: ``nn.Linear`` and ntkscope `Dense`; ``nn.Conv1d``/``nn.Conv2d`` (stride,
    dilation, zero padding incl. "same") and ntkscope `Conv` (1-d and 2-d); average pooling,
    adaptive average pooling, means over position axes; flatten (``nn.Flatten``,
    ``flatten(1)``, ``view(N, -1)``); sums of independent branches (x + f(x),
    a·f(x) + b·x, h + φ(W·LN(h)): branches that share no weight layer since their last
    one, their features' means included), sums a·φ(g) + b·g of a Gaussian tensor and its
    activation (φ(h) + h, by Stein's lemma) and scalar multiples; LayerNorm and RMSNorm over
    the last axis, with or without affine parameters, also of features with nonzero mean
    (LayerNorm right after ReLU or GELU); Dropout in eval mode, identity; elementwise
    activations (closed-form or series duals of `ntkscope.kernels.dual`). Formulas and
    sources: `ntkscope.kernels._program_ops`.

    Concatenation along the width axis (``torch.cat``) when weight layers, pooling, norms or
    sums follow it, in the limit where the groups' widths keep their fractions
    (`ntkscope.kernels._program_concat`).

    Departures: an activation must act on zero-mean Gaussian features (not right after a
    concatenation, another activation, a norm with a bias, or a sum with the input or a
    nonlinear branch); other sums of correlated branches (φ(h) + ψ(h), LN(h) + h) and
    layers called twice (shared weights) are not supported. These are refused here, when
    the program is built (`ntkscope.kernels._program_lineage`); only errors that depend on
    the inputs' shapes (a layer acting on a position axis, an output with position axes)
    wait for the inputs.

    Args:
        model: the network; its forward takes one tensor (N, ...) and returns (N, O).
        memory_budget: default working memory of the kernel function's tiles.

    Returns:
        A `KernelFn`; ``kernel_fn.layers`` lists the kernel program, one line per operation.

    Raises:
        ProgramError (a ValueError): naming the layer or operation that has no
            infinite-width kernel here, and suggesting `ntkscope.monte_carlo_kernels`.
    """
    return KernelFn(trace(model), memory_budget)
