"""What a kernel program may do, decided from the graph alone, when the program is built.

Two facts of the infinite-width limit are properties of the network's graph, not of its
inputs, and `infinite_width` checks them once, so that an architecture it cannot describe
is refused at ``infinite_width(model)``, naming the node, rather than at the first kernel
evaluation:

- **Gaussian features.** The output of a weight layer (fresh zero-mean weights) is a
  zero-mean Gaussian process, feature by feature; so are scalar multiples, poolings and
  means over positions of it, sums of independent such tensors, and a norm of it without
  bias and with a constant gain (a deterministic per-input scale in the limit). An
  activation's dual E[φ(u) φ(v)] holds only for such inputs: an activation of the output
  of another activation, of a norm with a bias, of a sum with the input or with a nonlinear
  branch, or of a concatenation of groups with different kernels is refused.
- **Fresh weights.** A layer called twice shares its weights between the calls; refused.
- **Independent branches.** Feature i of a tensor is a function of feature i of the weight
  layers it descends from since the last weight layer on its path (its *sources*): a
  weight layer starts a new source; activations, norms (whose mean and variance over the
  width are deterministic in the limit), pooling and scalar multiples keep them; a sum or a
  concatenation takes their union. Outputs of different weight layers are independent, so
  a sum of branches with disjoint sources is exact (`_program_ops.add`), and so is
  a·φ(g) + b·g (Stein's lemma, `_program_ops.add_shared`); any other sum whose branches
  share a source (φ(h) + ψ(h), LN(h) + h) is refused: its cross-covariance is a mixed
  dual that the program does not carry.

Shapes and layouts (which axis a layer acts on, matching position axes) depend on the
inputs and are checked when the kernel function runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from ntkscope.kernels._program_kernel import ProgramError
from ntkscope.kernels._program_step import SUGGESTION, Step


@dataclass(frozen=True)
class Lineage:
    """sources: the weight layers (node names) the features descend from since the last
    weight layer; gaussian: zero-mean Gaussian features; mixed: a concatenation of groups
    with different kernels (`ntkscope.kernels._program_concat`)."""

    sources: frozenset[str]
    gaussian: bool
    mixed: bool = False


_INPUT = Lineage(frozenset(), gaussian=False)
"""The network input (or what is computed from it before any weight layer): deterministic."""


def check(input_node: fx.Node, steps: list[Step], output: fx.Node) -> None:
    """Raise `ProgramError` naming the first node the program cannot describe (see above)."""
    env: dict[fx.Node, Lineage | None] = {input_node: None}  # None: before any weight layer
    layers = [s.node.target for s in steps if s.kind == "layer"]
    for target in {t for t in layers if layers.count(t) > 1}:
        raise ProgramError(
            f"{target}: the layer is called more than once (shared weights); the program "
            f"assumes fresh weights at each call; {SUGGESTION}"
        )
    for step in steps:
        env[step.node] = _lineage(step, [env[n] for n in step.node.all_input_nodes])
    out = env[output]
    if out is None:
        raise ProgramError("model: no weight layer between the input and the output")
    if out.mixed:
        raise ProgramError(
            "model: its output is a concatenation of features with different kernels; "
            "expected a weight layer after torch.cat"
        )


def _lineage(step: Step, args: list[Lineage | None]) -> Lineage | None:
    name = step.node.name
    if step.kind == "layer":
        return Lineage(frozenset({str(step.node.target)}), gaussian=True)
    if all(a is None for a in args):
        if step.kind == "norm":
            raise ProgramError(
                f"{step.node.target}: a layer with parameters before the first Linear or "
                f"Conv is not supported; {SUGGESTION}"
            )
        return None
    given = [_INPUT if a is None else a for a in args]
    first = given[0]
    if step.kind == "activation":
        _check_activation(step, first)
        return Lineage(first.sources, gaussian=step.gaussian)
    if step.kind == "norm":
        return Lineage(first.sources, first.gaussian and step.gaussian, first.mixed)
    if step.kind == "add":
        return _sum(name, given)
    if step.kind == "add_shared":  # a·φ(g) + b·g: g is Gaussian (φ's check), the sum is not
        return Lineage(frozenset().union(*(a.sources for a in given)), gaussian=False)
    if step.kind == "cat":
        return Lineage(
            frozenset().union(*(a.sources for a in given)),
            all(a.gaussian for a in given),
            mixed=True,
        )
    return first


def _check_activation(step: Step, first: Lineage) -> None:
    if first.mixed:
        raise ProgramError(
            f"{step.node.name}: the activation {step.what} acts on a concatenation of "
            "features with different kernels; only a weight layer (Linear, Conv), pooling, "
            f"flatten, a norm or a sum may follow torch.cat here; {SUGGESTION}"
        )
    if not first.gaussian:
        raise ProgramError(
            f"{step.node.name}: the activation {step.what} acts on features that are not "
            "zero-mean Gaussian in the limit (the output of another activation, of a norm "
            "with a bias, or of a sum with the input or a nonlinear branch); its dual needs "
            f"zero-mean Gaussian inputs; {SUGGESTION}"
        )


def _sum(name: str, given: list[Lineage]) -> Lineage:
    a, b = given
    shared = a.sources & b.sources
    if shared:
        raise ProgramError(
            f"{name}: adds two branches that are correlated (both are functions of the "
            f"features of {', '.join(sorted(shared))}, e.g. LN(h) + h; only a·φ(g) + b·g "
            f"is supported): their cross-covariance has no closed form here; {SUGGESTION}"
        )
    return Lineage(a.sources | b.sources, a.gaussian and b.gaussian, a.mixed or b.mixed)
