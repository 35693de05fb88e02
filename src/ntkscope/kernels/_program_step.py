"""What one node of a captured network becomes in the kernel program: a `Step`.

Shared by the capture (`ntkscope.kernels._program_capture`), the pooling steps
(`ntkscope.kernels._program_pooling`) and the graph checks (`ntkscope.kernels._program_lineage`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.fx as fx

from ntkscope.kernels._program_kernel import Context, Kernel

SUGGESTION = "use ntkscope.monte_carlo_kernels for this architecture"


@dataclass(frozen=True)
class Raw:
    """Values before the first weight layer: x (single run) or the pair (x1, x2)."""

    x1: object
    x2: object | None


Value = Raw | Kernel
Apply = Callable[[list[Kernel], Context], Kernel]


@dataclass(frozen=True)
class Step:
    """One node: its kernel function, and what it is for `ntkscope.kernels._program_lineage`.

    kind: "layer" (a weight layer: on raw inputs it makes the input kernel, channels on
    ``channel``), "activation", "norm", "add", "add_shared" (a·φ(g) + b·g, g in ``extra``),
    "cat", or "linear" (anything else: pooling,
    means, flatten, scalar multiples, identities; on raw inputs it runs as the network
    would). gaussian: an activation or norm that keeps zero-mean Gaussian features so
    (identity; a norm without bias and with a constant gain). what: the activation's name.
    """

    node: fx.Node
    text: str
    apply: Apply
    kind: str = "linear"
    channel: int = -1
    arrays: int = 0  # float64 values per entry of the step's dual (0: no dual)
    gaussian: bool = False
    what: str = ""
    extra: tuple[fx.Node, ...] = ()  # nodes whose kernels follow the arguments' (add_shared)


def label(node: fx.Node) -> str:
    """The layer's qualified name for modules, the node's name otherwise."""
    return str(node.target) if node.op == "call_module" else node.name


def pair(value: object, n: int) -> tuple:
    """``value`` as an n-tuple (a number repeated, or a tuple/list as given)."""
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n
