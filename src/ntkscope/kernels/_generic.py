"""The two torch.func eNTK methods, valid for any model (PyTorch's NTK tutorial).

Jacobian contraction: per-example Jacobians ``J(x) = ∂f(x)/∂θ`` (O × P) by
``vmap(jacrev)``, then ``Θ̂(x, x') = J(x) J(x')ᵀ`` — one GEMM over all parameters.
Costs N·O backward passes plus N1·N2·O²·P multiply-adds (N1·N2·O·P in trace mode), and
O·P numbers of memory per example.

NTK-vector products (Novak et al. 2022): for each (example n, output o) of a block of x1,
a vector-Jacobian product gives the row ``J_{n,o}(x1)`` and a Jacobian-vector product
through f(x2) gives ``J(x2) J_{n,o}(x1)ᵀ``, a column of Θ̂. Never stores more than one
block's Jacobian rows; costs about N1·N2·O forward-and-backward passes of one example, so
it wins when O is large in full mode, or when per-example Jacobians do not fit in memory.

Per-example autograd: the same per-example Jacobians as Jacobian contraction, one plain
backward pass per example and output (no ``vmap``, no forward-mode AD), so it works for
every model autograd can differentiate; the slowest, it is the last resort of ``auto``.
"""

from __future__ import annotations

import torch
from torch.func import jacrev, jvp, vjp, vmap

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._gram import OUTPUT_BLOCKS_MIN, gram, gram_diagonal, symmetric_sum
from ntkscope.kernels._tiling import symmetric_tile


class JacobianStrategy:
    """Tiling strategy: features are the flattened per-example Jacobians (n, O, P)."""

    def __init__(self, fm: FunctionalModel, n_out: int, full: bool):
        self.fm, self.full = fm, full
        item = torch.empty((), dtype=fm.dtype).element_size()
        self.feature_bytes = 2 * n_out * fm.n_params * item  # Jacobian and its flat copy
        self.pair_bytes = item * (2 * n_out**2 if full else 2)
        self.extract_bytes = 0  # counted in feature_bytes

    def features(self, x: Batch) -> torch.Tensor:
        def single(theta, example):
            return self.fm(theta, _batch.unsqueeze(example))[0]

        jac = vmap(jacrev(single), (None, 0))(self.fm.theta, x)  # name -> (n, O, *shape)
        return torch.cat([j.flatten(2) for j in jac.values()], dim=2)

    def pair(self, j1: torch.Tensor, j2: torch.Tensor) -> torch.Tensor:
        return gram(j1, j2, self.full)

    def symmetric(self, j: torch.Tensor) -> torch.Tensor:
        if self.full and j.shape[1] >= OUTPUT_BLOCKS_MIN:
            return symmetric_sum([(None, j)])
        return symmetric_tile(gram(j, j, self.full))

    def diagonal(self, j: torch.Tensor) -> torch.Tensor:
        return gram_diagonal(j, self.full)


class NTVPStrategy:
    """Tiling strategy: features are the inputs; each tile is O·b vjp/jvp pairs."""

    def __init__(self, fm: FunctionalModel, n_out: int, full: bool, activation_numel: int):
        self.fm, self.n_out, self.full = fm, n_out, full
        item = torch.empty((), dtype=fm.dtype).element_size()
        # per row of a tile: one parameter-sized tangent per output
        self.feature_bytes = 2 * n_out * fm.n_params * item
        # per pair: the jvp's activations for every (row, output) and the O×O block
        self.pair_bytes = item * n_out * (2 * activation_numel + n_out)
        self.extract_bytes = 0  # the features are the inputs

    def features(self, x: Batch) -> Batch:
        return x

    def pair(self, x1: Batch, x2: Batch) -> torch.Tensor:
        theta, n1, n_out = self.fm.theta, _batch.size(x1), self.n_out
        _, pullback = vjp(lambda t: self.fm(t, x1), theta)

        def column(cotangent):
            (tangent,) = pullback(cotangent)
            return jvp(lambda t: self.fm(t, x2), (theta,), (tangent,))[1]

        basis = torch.eye(n1 * n_out, dtype=self.fm.dtype, device=self.fm.device)
        block = vmap(column)(basis.view(n1 * n_out, n1, n_out))  # (n1·O, n2, O)
        block = block.view(n1, n_out, -1, n_out).permute(0, 2, 1, 3)  # (n1, n2, O, O)
        return block if self.full else block.diagonal(dim1=2, dim2=3).sum(-1)

    def symmetric(self, x: Batch) -> torch.Tensor:
        return symmetric_tile(self.pair(x, x))

    def diagonal(self, x: Batch) -> torch.Tensor:
        def one(example):
            example = _batch.unsqueeze(example)
            return self.pair(example, example)[0, 0]

        return vmap(one)(x)


class AutogradStrategy(JacobianStrategy):
    """`JacobianStrategy` whose Jacobians come from a loop of plain backward passes."""

    def features(self, x: Batch) -> torch.Tensor:
        theta = {name: t.clone().requires_grad_(True) for name, t in self.fm.theta.items()}
        leaves = list(theta.values())
        rows = []
        with torch.enable_grad():
            for n in range(_batch.size(x)):
                out = self.fm(theta, _batch.take(x, slice(n, n + 1)))[0]
                rows.append(torch.stack([self._row(out[o], leaves) for o in range(len(out))]))
        return torch.stack(rows)  # (n, O, P)

    @staticmethod
    def _row(value: torch.Tensor, leaves: list[torch.Tensor]) -> torch.Tensor:
        """∂value/∂θ flattened to (P,); zeros for parameters the value does not use, a
        sparse gradient made dense (an ``F.embedding(..., sparse=True)`` that the forward
        calls itself, which `FunctionalModel`'s `DenseGradients` does not see)."""
        grads = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
        return torch.cat([_dense(g, t).reshape(-1) for g, t in zip(grads, leaves, strict=True)])


def _dense(gradient: torch.Tensor | None, leaf: torch.Tensor) -> torch.Tensor:
    """The gradient of ``leaf`` as a strided tensor: zeros for None, a sparse one densified."""
    if gradient is None:
        return torch.zeros_like(leaf)
    return gradient if gradient.layout is torch.strided else gradient.to_dense()
