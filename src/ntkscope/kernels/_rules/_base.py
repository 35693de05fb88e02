"""What a structured eNTK rule is: the factors of one layer's parameter Jacobian.

A rule turns a layer's input ``a`` and the output gradients ``g = ∂f_o/∂h`` (h the layer's
output) of a block of examples into *terms* whose Gram products add up to the layer's
contribution to Θ̂ (CONVENTIONS.md, "Empirical NTK"):

- `Factors` (a, g): the Jacobian of output o with respect to the layer's parameter matrix is
  ``Σ_p g_{o,p} ⊗ a_p`` over the positions p where the matrix is applied (sequence elements,
  convolution patches), so ``Θ_W(x, x')_{oo'} = Σ_{p,q} (a_p · a'_q)(g_{o,p} · g'_{o',q})``.
  The driver (`_structured`) contracts it in the cheapest of three ways by FLOP count.
- `Jacobian` j: the per-example Jacobian itself, (n, O, D), for parameters whose Jacobian is
  small (norm scales and shifts); contracted as ``j jᵀ``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModel(ValueError):
    """The structured method cannot compute this model's eNTK; the message says why."""


@dataclass
class Factors:
    """A parameter Jacobian ``Σ_p g_{o,p} ⊗ a_p``.

    ``a``: (n, P, d_a) inputs at each position, or (n, P) integer ids standing for the
    one-hot vectors of size ``vocab`` (an embedding table's rows). ``g``: (n, O, P, d_g).
    """

    a: torch.Tensor
    g: torch.Tensor
    vocab: int | None = None

    @property
    def positions(self) -> int:
        return self.a.shape[1]

    @property
    def width(self) -> int:
        """d_a: the length of one position's input vector."""
        return self.a.shape[2] if self.vocab is None else self.vocab

    def take(self, rows: slice) -> Factors:
        """The factors of the examples ``rows`` (views)."""
        return Factors(self.a[rows], self.g[rows], self.vocab)

    def inner(self, other: Factors) -> torch.Tensor:
        """``a_p · a'_q`` for every pair of examples and positions: (n, P, m, Q)."""
        (n, p), (m, q) = self.a.shape[:2], other.a.shape[:2]
        if self.vocab is None:
            return (self.a.flatten(0, 1) @ other.a.flatten(0, 1).T).view(n, p, m, q)
        same = self.a.reshape(-1, 1) == other.a.reshape(1, -1)
        return same.to(self.g.dtype).view(n, p, m, q)

    def self_inner(self) -> torch.Tensor:
        """``a_p · a_q`` within each example: (n, P, P)."""
        if self.vocab is None:
            return self.a @ self.a.transpose(1, 2)
        return (self.a[:, :, None] == self.a[:, None, :]).to(self.g.dtype)

    def jacobian(self) -> torch.Tensor:
        """The per-example Jacobian ``Σ_p g_{o,p} ⊗ a_p`` flattened: (n, O, d_g·d_a)."""
        n, n_out, p, d_g = self.g.shape
        if self.vocab is None:  # one GEMM per example, g as (O·d_g, P): a conv's own layout
            rows = self.g.transpose(2, 3).reshape(n, n_out * d_g, p)
            return torch.bmm(rows, self.a).view(n, n_out, -1)
        rows = self.g.new_zeros(n, n_out, self.vocab, d_g)  # scatter of g by id
        index = self.a[:, None, :, None].expand_as(self.g)
        return rows.scatter_add_(2, index, self.g).flatten(2)


@dataclass
class Jacobian:
    """A per-example parameter Jacobian (n, O, D)."""

    j: torch.Tensor


Term = Factors | Jacobian


class Rule:
    """The structured eNTK of one supported layer type (subclasses: one per file).

    A subclass checks the module's configuration in `check` (raising `UnsupportedModel`
    for one it cannot factorize) and returns the terms of its trainable parameters in
    `terms`. ``trainable``: which of ``weight`` and ``bias`` are in θ.
    """

    def __init__(self, module: nn.Module, label: str, trainable: frozenset[str]):
        self.module, self.label, self.trainable = module, label, trainable
        self.check()

    def check(self) -> None:
        """Raise `UnsupportedModel` for a configuration the rule cannot factorize."""

    def terms(self, a: torch.Tensor, g: torch.Tensor) -> list[Term]:
        """Terms for the layer input ``a`` (n, ...) and output gradients ``g`` (n, O, ...)."""
        raise NotImplementedError

    def input_gradient(self, a: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A map from the gradient of the layer's output to that of its input ``a``, for a
        layer whose backward pass the rule computes faster than autograd's (called during
        the forward pass: the module's parameters are those of this call); None (the
        default) leaves it to autograd."""
        return None

    def refuse(self, why: str) -> UnsupportedModel:
        return UnsupportedModel(f"{self.label}: {why}")


def scaled_columns(a: torch.Tensor, weight: bool, bias: bool, scales=(1.0, 1.0)) -> torch.Tensor:
    """``[s_w·a, s_b]``: a weight's inputs (n, P, d) with the bias folded in as a constant
    column (``h = s_w W a + s_b b`` is then ``[W b] [s_w a; s_b]``), for the parts in θ."""
    if weight and not bias and scales[0] == 1:
        return a
    columns = [scales[0] * a] if weight else []
    if bias:
        columns.append(a.new_full((*a.shape[:2], 1), scales[1]))
    return torch.cat(columns, dim=2)
